"""Cost of bidirectional fusion as a fraction of the mask stage (goal: <= 2%).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fusion_cost.py [--seqs car-shadow] [--k 5]

In one process: the CPU backend's mask stage (anchor masks + forward and backward propagation,
`iter_segments`) on a davis16-mini sequence with distance-transform-peak points at the anchors
is timed once; then fusing those same candidates into the per-frame masks (`fuse_segment`, every
strategy) is timed over several repeats. Both use this process's CPU time (the machine is shared,
so wall time is noisy) and wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "davis16-mini"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqs", default="car-shadow")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} not found", file=sys.stderr)
        return 1
    import cv2

    cv2.setNumThreads(1)
    from videomolmo.fusion import strategy_names
    from videomolmo.masks import foreground
    from videomolmo.segmentation.cpu import CpuPredictor
    from videomolmo.segmentation.propagation import fuse_segment, iter_segments
    from videomolmo.video import open_video

    stage_cpu = stage_wall = 0.0
    fuse_cpu: dict[str, float] = {s: 0.0 for s in strategy_names()}
    fuse_wall: dict[str, float] = {s: 0.0 for s in strategy_names()}
    frames_total = 0
    for seq in args.seqs.split(","):
        video = open_video(DATA / "JPEGImages" / seq)
        frames = [video[i] for i in range(len(video))]
        points = {}
        for t in range(0, len(frames), args.k):
            gt = foreground(DATA / "Annotations" / seq / f"{video.frame_names[t]}.png")
            dt = ndi.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1]
            y, x = np.unravel_index(np.argmax(dt), dt.shape)
            points[t] = np.array([[float(x), float(y)]])
        predictor = CpuPredictor()
        c0, w0 = time.process_time(), time.perf_counter()
        segs = list(iter_segments(frames, points, predictor, k=args.k))
        stage_cpu += time.process_time() - c0
        stage_wall += time.perf_counter() - w0
        frames_total += len(frames)
        for s in strategy_names():
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(args.repeats):
                for seg in segs:
                    for _t, _m in fuse_segment(seg, s, 0.7):
                        pass
            fuse_cpu[s] += (time.process_time() - c0) / args.repeats
            fuse_wall[s] += (time.perf_counter() - w0) / args.repeats

    print(f"mask stage (k={args.k}, {frames_total} frames): {stage_cpu / frames_total * 1e3:.1f} ms/frame CPU, "
          f"{stage_wall / frames_total * 1e3:.1f} ms/frame wall")
    print(f"{'strategy':14s} {'ms/frame':>9s} {'% of stage (CPU)':>17s} {'% (wall)':>9s}")
    for s in strategy_names():
        print(f"{s:14s} {fuse_cpu[s] / frames_total * 1e3:9.3f} {100 * fuse_cpu[s] / stage_cpu:17.2f} "
              f"{100 * fuse_wall[s] / stage_wall:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
