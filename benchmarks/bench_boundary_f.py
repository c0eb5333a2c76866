"""Boundary F speed: `videomolmo.metrics.boundary_f` vs the straightforward full-frame algorithm.

The baseline is the DAVIS 2017 toolkit's own algorithm, written out here: full-frame boundary
maps (E/S/SE neighbour XOR) and `cv2.dilate` of both maps with skimage's disk over the whole
frame. Both run in this process on the same davis16-mini frame pairs (480x854): ground truth
against an eroded, a dilated, a shifted version and the ground truth 5 frames later. Every pair
must give bit-identical F; the script exits 1 otherwise.

Timing: both implementations are single-threaded (OpenCV and BLAS pinned to one thread), so
each round is measured in process CPU time (`time.process_time`), which -- unlike wall time --
does not count the time the process waits for a core on a shared machine; `--wall` switches to
wall-clock time. For each pair the two implementations alternate for `--repeat` rounds and the
fastest round of each counts; the printed ratio is sum(baseline) / sum(ours).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_boundary_f.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_boundary_f.py --fuzz 3000   # equality only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from videomolmo.metrics import boundary_f, jaccard

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "davis16-mini"


def seg2bmap_full(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def disk(radius: float) -> np.ndarray:
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


def boundary_f_full_frame(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """The toolkit's f_measure: everything over the whole frame."""
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    fg_b, gt_b = seg2bmap_full(pred), seg2bmap_full(gt)
    kernel = disk(bound_pix)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel)
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_b * gt_dil) / float(n_fg)
        recall = np.sum(gt_b * fg_dil) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def jaccard_toolkit(gt: np.ndarray, pred: np.ndarray) -> float:
    """The toolkit's db_eval_iou for one frame (no void pixels)."""
    inters = np.sum(pred & gt, axis=(-2, -1))
    union = np.sum(pred | gt, axis=(-2, -1))
    return 1 if np.isclose(union, 0) else inters / union


def frame_pairs(videos: list[str], frame: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    square = np.ones((9, 9), np.uint8)
    for video in videos:
        files = sorted((DATA / "Annotations" / video).glob("*.png"))
        gt = np.array(Image.open(files[frame])) > 0
        later = np.array(Image.open(files[min(frame + 5, len(files) - 1)])) > 0
        pairs += [
            (f"{video} eroded", gt, cv2.erode(gt.view(np.uint8), square).view(bool)),
            (f"{video} dilated", gt, cv2.dilate(gt.view(np.uint8), square).view(bool)),
            (f"{video} shifted", gt, np.roll(gt, (12, -20), axis=(0, 1))),
            (f"{video} t+5", gt, later),
        ]
    return pairs


def round_time(fn, gt: np.ndarray, pred: np.ndarray, number: int, clock) -> float:
    start = clock()
    for _ in range(number):
        fn(gt, pred)
    return (clock() - start) / number


def fuzz(cases: int, seed: int = 123) -> int:
    """Random masks of random sizes and tolerances: F must equal the full-frame algorithm's."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mismatches = 0
    for i in range(cases):
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 130))
        kind = i % 4

        def mask() -> np.ndarray:
            if kind == 0:  # salt and pepper
                return rng.random((h, w)) < rng.uniform(0, 1)
            noise = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 4))
            return noise > np.quantile(noise, rng.uniform(0, 1))

        a = mask()
        b = mask() if kind != 3 else np.roll(a, int(rng.integers(-5, 6)), axis=int(rng.integers(0, 2)))
        th = [0.008, 0.02, 0.1, 0.3, 0.0, 1, 2, 5, 13][i % 9]
        ours, base = boundary_f(a, b, bound_th=th), boundary_f_full_frame(a, b, bound_th=th)
        if ours != base:
            mismatches += 1
            print(f"MISMATCH case {i}: {h}x{w} bound_th={th}: ours {ours!r} full-frame {base!r}", file=sys.stderr)
    print(f"fuzz: {cases} random mask pairs, {mismatches} mismatches")
    return 1 if mismatches else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="*", default=["blackswan", "car-shadow", "dog", "kite-surf", "motocross-jump", "scooter-black"])
    parser.add_argument("--frame", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=15, help="alternating rounds per pair")
    parser.add_argument("--number", type=int, default=5, help="calls per timed round")
    parser.add_argument("--wall", action="store_true", help="time wall clock instead of CPU time")
    parser.add_argument("--fuzz", type=int, default=0, metavar="N", help="only check N random mask pairs for identical F")
    args = parser.parse_args()
    if args.fuzz:
        return fuzz(args.fuzz)
    clock = time.perf_counter if args.wall else time.process_time
    if not DATA.is_dir():
        print(f"davis16-mini not found at {DATA}", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)

    pairs = frame_pairs(args.videos, args.frame)
    total_base = total_ours = 0.0
    print(f"{'pair':<26} {'F':>10} {'full-frame ms':>14} {'ours ms':>9} {'ratio':>7}")
    for name, gt, pred in pairs:
        ours, base = boundary_f(gt, pred), boundary_f_full_frame(gt, pred)
        if ours != base:
            print(f"MISMATCH {name}: ours {ours!r} full-frame {base!r}", file=sys.stderr)
            return 1
        t_base = t_ours = float("inf")
        for _ in range(args.repeat):
            t_base = min(t_base, round_time(boundary_f_full_frame, gt, pred, args.number, clock))
            t_ours = min(t_ours, round_time(boundary_f, gt, pred, args.number, clock))
        total_base += t_base
        total_ours += t_ours
        print(f"{name:<26} {ours:>10.6f} {t_base * 1e3:>14.3f} {t_ours * 1e3:>9.3f} {t_base / t_ours:>6.1f}x")
    # region J on the same pairs, for the full picture of a J&F evaluation's cost
    j_base = j_ours = 0.0
    for name, gt, pred in pairs:
        if jaccard(gt, pred) != jaccard_toolkit(gt, pred):
            print(f"MISMATCH J {name}", file=sys.stderr)
            return 1
        j_base += min(round_time(jaccard_toolkit, gt, pred, args.number, clock) for _ in range(args.repeat))
        j_ours += min(round_time(jaccard, gt, pred, args.number, clock) for _ in range(args.repeat))
    shape = pairs[0][1].shape
    print(
        f"\nJ: identical on all pairs; jaccard {j_base / len(pairs) * 1e3:.3f} ms (toolkit db_eval_iou) -> "
        f"{j_ours / len(pairs) * 1e3:.3f} ms per pair, {j_base / j_ours:.1f}x"
    )
    print(
        f"{len(pairs)} pairs of {shape[0]}x{shape[1]} masks, identical F on all; "
        f"boundary_f is {total_base / total_ours:.1f}x faster than the full-frame algorithm "
        f"({total_base / len(pairs) * 1e3:.2f} ms -> {total_ours / len(pairs) * 1e3:.2f} ms per pair, "
        f"{'wall' if args.wall else 'CPU'} time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
