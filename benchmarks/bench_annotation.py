"""Point annotation on davis16-mini: how good are best-of-k points, and what do they cost?

For every `--frame-step`-th frame of each video (one object per DAVIS-2016 video), with the mask
backend's point -> mask as `videomolmo annotate` runs it: `predict_frame` on the open video when
the backend uses a video cue (the cpu backend's motion), the single-frame `predict_image` with
`--no-video-cue` or for backends without one:

* baseline: one click at the peak of the mask's distance transform (the deepest interior pixel),
  the deterministic single point the issue's calibration probe used;
* the pipeline: k = 10 distance-weighted candidates (`sample_candidates`, the same per-unit seeds
  as `videomolmo annotate`), each scored by the IoU of its predicted mask with the ground truth.
  Best-of-k for k = 1, 3, 5, 10, 20, 30 (up to `--k`) uses the first k of the `--k` candidates.

Prints mean IoU per strategy, seconds per predict_image call and per annotated frame (k = 10),
and the time ratio pipeline / baseline, all measured in this process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_annotation.py [--backend cpu] [--frame-step 10] \
        [--no-video-cue] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT / ".." / "shared" / "data" / "davis16-mini"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DAVIS)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--sam2", type=Path, default=None)
    ap.add_argument("--frame-step", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one CpuConfig field (VALUE is JSON), as bench_mask_stage.py")
    ap.add_argument("--videos", default=None, help="comma-separated videos (default: all)")
    ap.add_argument("--no-video-cue", action="store_true", help="segment clicks on the frame alone (predict_image)")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-frame numbers here")
    args = ap.parse_args()

    from videomolmo.annotation import boundary_distance, object_masks, sample_candidates, unit_rng
    from videomolmo.segmentation.registry import get_predictor
    from videomolmo.data import load_dataset
    from videomolmo.metrics import jaccard

    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_anchor_masks import parse_overrides

    predictor = get_predictor(args.backend, checkpoint=args.sam2, **parse_overrides(args.set))
    dataset = load_dataset(args.data)
    seen: set[str] = set()
    rows = []
    t_peak = t_cand = 0.0
    n_cand_calls = 0
    for sample in dataset:
        if args.videos and sample.video_id not in args.videos.split(","):
            continue
        if sample.video_id in seen:  # davis16-mini: every expression of a video is the same object
            continue
        seen.add(sample.video_id)
        video = sample.video()
        with_video = not args.no_video_cue and getattr(predictor, "uses_video_cue", False)
        state = predictor.init_state(video) if with_video else None
        for i in range(0, len(sample.frame_names), args.frame_step):
            for obj_id, mask in object_masks(sample, i):
                if not mask.any():
                    continue
                frame = video[i]

                def segment(points, frame=frame, i=i):
                    if state is not None:
                        return predictor.predict_frame(state, i, points)
                    return predictor.predict_image(frame, points)
                dist = boundary_distance(mask)
                y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
                t0 = time.perf_counter()
                peak_iou = float(jaccard(mask, segment(np.array([[x + 0.5, y + 0.5]]))))
                t_peak += time.perf_counter() - t0
                rng = unit_rng(args.seed, sample.video_id, obj_id, str(sample.frame_names[i]))
                cands = sample_candidates(mask, args.k, rng)
                ious = []
                t0 = time.perf_counter()
                for c in cands:
                    ious.append(float(jaccard(mask, segment(c[None]))))
                t_cand += time.perf_counter() - t0
                n_cand_calls += len(cands)
                rows.append({"video": sample.video_id, "frame": sample.frame_names[i], "peak": peak_iou,
                             "candidates": ious})
                print(f"{sample.video_id:>15} {sample.frame_names[i]}  peak {peak_iou:.3f}  "
                      f"best-of-{len(ious)} {max(ious):.3f}", flush=True)
        close = getattr(video, "close", None)
        if close:
            close()

    n = len(rows)
    cue = "single frame" if args.no_video_cue or not getattr(predictor, "uses_video_cue", False) else "video cue"
    print(f"\n{args.backend} backend ({cue}), {n} (object, frame) pairs from {len(seen)} videos, "
          f"frame step {args.frame_step}")
    print(f"{'strategy':>28} | mean IoU")
    print(f"{'distance-peak point (base)':>28} | {np.mean([r['peak'] for r in rows]):.3f}")
    for k in sorted({1, 3, 5, 10, 20, 30, args.k}):
        if k <= args.k:
            best = np.mean([max(r["candidates"][:k]) for r in rows])
            print(f"{f'best of {k} weighted candidates':>28} | {best:.3f}")
    per_call = t_cand / max(n_cand_calls, 1)
    print(f"point -> mask: {per_call:.3f} s/call; pipeline (k={args.k}) {t_cand / n:.2f} s/frame; "
          f"baseline {t_peak / n:.2f} s/frame; ratio {t_cand / t_peak:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
