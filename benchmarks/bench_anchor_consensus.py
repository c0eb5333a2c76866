"""Anchor consensus on davis16-mini: is an anchor's mask better as a majority vote of its own
point -> mask, the previous anchor's mask propagated forward to it and the next anchor's
propagated backward to it? (`--reach 2`: also the anchors two away, a majority of five.)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_anchor_consensus.py [--split tuned|held-out|all] [--k 5] [--reach 1]

Clicks are the distance-transform peaks of the ground-truth masks at every k-th frame (the mask
stage's `--points peak`); each anchor is segmented in its own predictor state (`init_state` +
`add_points`, as `segmentation.propagation` does) and walked to its neighbouring anchors.
Prints mean region IoU (J) over the interior anchors (those with both neighbours) of the own
mask, of each propagated side and of the pixel-wise majority of the three.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mask_stage import DATA, HELD_OUT, peak_point  # noqa: E402


def walk_to(predictor, state, start: int, to: int) -> np.ndarray:
    mask = None
    for _, objs in predictor.propagate(state, start, to, reverse=to < start):
        mask = objs.get(1)
    return mask


def run_sequence(seq: str, predictor, k: int, reach: int = 1) -> list[dict]:
    from videomolmo.masks import foreground
    from videomolmo.metrics import jaccard
    from videomolmo.video import open_video

    video = open_video(DATA / "JPEGImages" / seq)
    frames = np.stack([video[i] for i in range(len(video))])
    anchors = list(range(0, len(frames), k))
    gts = {t: foreground(DATA / "Annotations" / seq / f"{video.frame_names[t]}.png") for t in anchors}
    states, own = {}, {}
    for t in anchors:
        states[t] = predictor.init_state(frames)
        own[t] = predictor.add_points(states[t], t, 1, peak_point(gts[t]))
    rows = []
    for i in range(reach, len(anchors) - reach):
        t = anchors[i]
        # Nearest neighbours first: fwd/bwd below are the +-1 anchors' masks.
        sides = [walk_to(predictor, states[anchors[i + d]], anchors[i + d], t)
                 for r in range(1, reach + 1) for d in (-r, r)]
        fwd, bwd = sides[0], sides[1]
        vote = own[t].astype(int) + np.sum(sides, axis=0) >= reach + 1
        rows.append({"seq": seq, "frame": t, **{name: float(jaccard(gts[t], m)) for name, m in
                                                (("own", own[t]), ("forward", fwd), ("backward", bwd),
                                                 ("majority", vote))}})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tuned", "held-out", "all"), default="tuned")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--reach", type=int, default=1,
                    help="anchors on each side that vote (1: the neighbours; 2: also the ones after them)")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} not found", file=sys.stderr)
        return 1
    import cv2

    cv2.setNumThreads(1)
    from videomolmo.evaluation.paired import paired_bootstrap
    from videomolmo.segmentation.cpu import CpuPredictor

    predictor = CpuPredictor("default")
    every = sorted(p.name for p in (DATA / "JPEGImages").iterdir())
    seqs = [s for s in every if args.split == "all" or (s in HELD_OUT) == (args.split == "held-out")]
    rows: list[dict] = []
    for seq in seqs:
        rows += run_sequence(seq, predictor, args.k, args.reach)
    keys = ("own", "forward", "backward", "majority")
    print(f"{args.split}, k={args.k}, reach {args.reach}, {len(rows)} interior anchors: " +
          ", ".join(f"{key} J {np.mean([r[key] for r in rows]):.3f}" for key in keys))
    d = paired_bootstrap([r["own"] for r in rows], [r["majority"] for r in rows])
    print(f"majority - own: {d['diff']:+.3f} (95 % CI {d['ci'][0]:+.3f} .. {d['ci'][1]:+.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
