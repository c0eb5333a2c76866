"""Anchor point -> mask on davis16-mini: region IoU (J) of the CPU backend's mask at the anchor
frames, the step that bounds the mask stage (BENCHMARKS.md, "Mask stage": with ground-truth
masks at the anchors the same propagation and fusion score 0.845 J&F, with the backend's own
anchors 0.575).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_anchor_masks.py [--split tuned|held-out|all] \
        [--step 5] [--image] [--set KEY=VALUE ...] [--json out.json]

Every `--step`-th frame of each sequence gets one click at the distance-transform peak of the
ground-truth mask (`bench_mask_stage.peak_point`, the mask stage's `--points peak`) and is
segmented through the video API (`init_state` on the sequence, `add_points` on the frame: what
the mask stage's anchors get, motion cue included); `--image` also scores the single-image
`predict_image` on the same clicks. Prints mean J per sequence and per split (tuned = every
sequence but the held-out two of `bench_mask_stage.HELD_OUT`) and this process's CPU seconds
per anchor. `--set KEY=VALUE` overrides a `CpuConfig` field (VALUE is JSON) as in
bench_mask_stage.py. Much cheaper than the full mask-stage bench (about 1 CPU s per anchor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mask_stage import DATA, HELD_OUT, parse_overrides, peak_point, precision_recall  # noqa: E402


def run_sequence(seq: str, predictor, step: int, image: bool) -> list[dict]:
    from videomolmo.masks import foreground
    from videomolmo.metrics import jaccard
    from videomolmo.video import open_video

    video = open_video(DATA / "JPEGImages" / seq)
    frames = np.stack([video[i] for i in range(len(video))])
    names = video.frame_names
    rows = []
    state = predictor.init_state(frames)
    for t in range(0, len(frames), step):
        gt = foreground(DATA / "Annotations" / seq / f"{names[t]}.png")
        point = peak_point(gt)
        if point is None:
            continue
        predictor.reset_state(state)
        c0 = time.process_time()
        mask = predictor.add_points(state, t, 1, point)
        row = {"seq": seq, "frame": t, "point": point[0].tolist(), "J": float(jaccard(gt, mask)),
               "cpu_s": time.process_time() - c0, "score": predictor.object_score(state, t, 1)}
        # Spill or miss? (precision / recall against the ground truth)
        row["P"], row["R"] = precision_recall(gt, np.asarray(mask, bool))
        if image:
            c0 = time.process_time()
            row["J_image"] = float(jaccard(gt, predictor.predict_image(frames[t], point)))
            row["cpu_s_image"] = time.process_time() - c0
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tuned", "held-out", "all"), default="all")
    ap.add_argument("--seqs", default=None, help="comma-separated sequences (overrides --split)")
    ap.add_argument("--step", type=int, default=5, help="anchor spacing in frames")
    ap.add_argument("--image", action="store_true", help="also score predict_image (single frame)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path, default=None, help="write the per-anchor rows here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every anchor")
    args = ap.parse_args(argv)
    if args.step <= 0:
        ap.error("--step must be positive")
    if not DATA.is_dir():
        print(f"{DATA} not found", file=sys.stderr)
        return 1
    import cv2

    cv2.setNumThreads(1)
    from videomolmo.errors import VideoMolmoError
    from videomolmo.segmentation.cpu import CpuPredictor

    overrides = parse_overrides(args.set)
    try:
        predictor = CpuPredictor(args.preset, **overrides)
    except (TypeError, VideoMolmoError) as e:
        print(f"--preset/--set: {e}", file=sys.stderr)
        return 1
    every = sorted(p.name for p in (DATA / "JPEGImages").iterdir())
    if args.seqs:
        seqs = args.seqs.split(",")
        unknown = sorted(set(seqs) - set(every))
        if unknown:
            print(f"unknown sequences {unknown}; have {every}", file=sys.stderr)
            return 1
    elif args.split == "tuned":
        seqs = [s for s in every if s not in HELD_OUT]
    elif args.split == "held-out":
        seqs = [s for s in every if s in HELD_OUT]
    else:
        seqs = every

    rows: list[dict] = []
    for seq in seqs:
        got = run_sequence(seq, predictor, args.step, args.image)
        rows += got
        extra = f"  image {np.mean([r['J_image'] for r in got]):.3f}" if args.image else ""
        print(f"{seq:>15}: J {np.mean([r['J'] for r in got]):.3f}{extra}  "
              f"P {np.mean([r['P'] for r in got]):.3f} R {np.mean([r['R'] for r in got]):.3f}  ({len(got)} anchors, "
              f"{np.mean([r['cpu_s'] for r in got]):.2f} CPU s/anchor)", flush=True)
        if args.verbose:
            for r in got:
                img = f" image {r['J_image']:.3f}" if args.image else ""
                print(f"{'':>17}{r['frame']:3d}  J {r['J']:.3f}{img}  score {r['score']:.2f}")

    def mean_over(group: list[str], key: str) -> float:
        # Mean over sequences (as the mask-stage bench), not over anchors.
        return float(np.mean([np.mean([r[key] for r in rows if r["seq"] == s]) for s in group]))

    groups = {"tuned": [s for s in seqs if s not in HELD_OUT], "held-out": [s for s in seqs if s in HELD_OUT]}
    if groups["tuned"] and groups["held-out"]:
        groups["all"] = seqs
    settings = {"preset": args.preset, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in overrides.items()}, "step": args.step}
    print(f"settings {json.dumps(settings)}")
    summary = {}
    for g, members in groups.items():
        if not members:
            continue
        summary[g] = {"J": mean_over(members, "J")}
        line = f"{g:>9}: anchor J {summary[g]['J']:.3f}"
        if args.image:
            summary[g]["J_image"] = mean_over(members, "J_image")
            line += f"  predict_image J {summary[g]['J_image']:.3f}"
        print(line)
    cpu = float(np.mean([r["cpu_s"] for r in rows]))
    print(f"add_points: {cpu:.2f} CPU s per anchor ({cpu / args.step:.2f} s/frame amortised at k={args.step})")
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
