"""Evaluation metrics as pure functions (numpy, OpenCV, SciPy): region J, boundary F, J&F
statistics, point precision / recall / F1 and counting.

`jaccard` and `boundary_f` reproduce the DAVIS 2017 toolkit (`davis2017-evaluation`,
`davis2017/metrics.py`: `db_eval_iou`, `db_eval_boundary`, `f_measure`, `_seg2bmap`) value for
value, including its edge cases and optional void pixels, so numbers reported with this package
can be compared with published Ref-DAVIS17 / Ref-YouTube-VOS / MeViS results. `boundary_f` gets
the same values several times faster than the toolkit (see `_boundary_counts`).

Conventions: masks are boolean (H, W) frames or (T, H, W) stacks (anything non-zero counts as
foreground, as in the toolkit); one frame gives a Python float, a stack gives a float64 array with
one value per frame. Shapes that differ raise `videomolmo.errors.MaskError`.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from videomolmo.errors import ConfigError, MaskError

__all__ = [
    "DEFAULT_BOUND_TH",
    "PointScore",
    "boundary_f",
    "boundary_map",
    "boundary_radius",
    "count_accuracy",
    "count_mae",
    "db_statistics",
    "j_and_f",
    "jaccard",
    "point_hits_mask",
    "point_prf",
    "prf_from_counts",
    "score_expression",
]

#: The toolkit's boundary tolerance: a fraction of the image diagonal.
DEFAULT_BOUND_TH = 0.008


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _as_mask_pair(gt: Any, pred: Any, void: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    gt_arr = np.asarray(gt)
    pred_arr = np.asarray(pred)
    if gt_arr.shape != pred_arr.shape:
        raise MaskError(
            f"prediction mask shape {pred_arr.shape} differs from ground-truth shape {gt_arr.shape}"
        )
    if gt_arr.ndim not in (2, 3):
        raise MaskError(f"masks must be (H, W) or (T, H, W) arrays, got shape {gt_arr.shape}")
    if gt_arr.shape[-1] == 0 or gt_arr.shape[-2] == 0:
        raise MaskError(f"masks must not be empty arrays, got shape {gt_arr.shape}")
    void_arr = None
    if void is not None:
        void_arr = np.asarray(void)
        if void_arr.shape != gt_arr.shape:
            raise MaskError(f"void mask shape {void_arr.shape} differs from ground-truth shape {gt_arr.shape}")
        void_arr = void_arr.astype(bool, copy=False)
    return gt_arr.astype(bool, copy=False), pred_arr.astype(bool, copy=False), void_arr


# --------------------------------------------------------------------------------------------
# region similarity J
# --------------------------------------------------------------------------------------------


def jaccard(gt: Any, pred: Any, void: Any = None) -> float | np.ndarray:
    """Region similarity J (intersection over union), exactly as the toolkit's `db_eval_iou`.

    Args:
        gt: ground-truth mask, (H, W) or (T, H, W); non-zero is foreground.
        pred: predicted mask of the same shape.
        void: optional mask of pixels to ignore (DAVIS "void" label), same shape.

    Returns:
        A float for one frame, a float64 array of per-frame values for a stack. A frame where
        both masks are empty (union 0) scores 1.

    Raises:
        MaskError: shapes differ or are not 2-D / 3-D.
    """
    gt_b, pred_b, void_b = _as_mask_pair(gt, pred, void)
    if gt_b.ndim == 2:
        return _jaccard_frame(gt_b, pred_b, void_b)
    out = np.zeros(gt_b.shape[0], dtype=np.float64)
    for t in range(gt_b.shape[0]):
        out[t] = _jaccard_frame(gt_b[t], pred_b[t], None if void_b is None else void_b[t])
    return out


def _jaccard_frame(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> float:
    # |A u B| = |A| + |B| - |A n B|: three popcounts and one temporary instead of two of each
    # (the axis= form of count_nonzero is several times slower than the flat one)
    if void is None:
        inters = np.count_nonzero(gt & pred)
        union = np.count_nonzero(gt) + np.count_nonzero(pred) - inters
    else:
        keep = ~void
        inters = np.count_nonzero(gt & pred & keep)
        union = np.count_nonzero((gt | pred) & keep)
    return 1.0 if union == 0 else float(np.int64(inters) / np.int64(union))


# --------------------------------------------------------------------------------------------
# boundary F
# --------------------------------------------------------------------------------------------


def boundary_radius(height: int, width: int, bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Boundary tolerance in pixels as the toolkit computes it.

    `bound_th >= 1` is taken as pixels as is; otherwise it is a fraction of the image diagonal,
    rounded up: `ceil(bound_th * sqrt(h^2 + w^2))` (8 px for 480x854).
    """
    if not np.isfinite(bound_th) or bound_th < 0:
        raise ConfigError(f"bound_th must be a finite number >= 0, got {bound_th!r}")
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm((height, width))))


def boundary_map(mask: Any) -> np.ndarray:
    """One-pixel-wide boundary of a (H, W) mask, exactly as the toolkit's `_seg2bmap`.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour;
    pixels past the image edge count as equal to the nearest pixel inside (so a mask touching
    the image border has no boundary along it, and a full mask has none at all).
    """
    seg = np.asarray(mask)
    if seg.ndim != 2 or seg.size == 0:
        raise MaskError(f"boundary_map needs a non-empty (H, W) mask, got shape {seg.shape}")
    seg = np.ascontiguousarray(seg.astype(bool, copy=False))
    out = np.empty(seg.shape, dtype=np.uint8)
    return _boundary_window(seg, 0, seg.shape[0] - 1, 0, seg.shape[1] - 1, out).view(bool)


_BLOCK_2X2 = np.ones((2, 2), dtype=np.uint8)
_scratch = threading.local()


def _scratch_array(name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
    """A C-contiguous array of `shape` backed by a per-thread buffer reused across calls.

    `boundary_f` on a 480x854 frame needs several frame-sized temporaries; freshly allocated
    ones made the kernel map and zero new pages on every call (hundreds of page faults per
    frame pair), which cost as much as the computation itself. The array is only valid until
    the next request for the same name in this thread.
    """
    size = shape[0] * shape[1]
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1 << 16), dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:size].reshape(shape)


def _boundary_window(seg: np.ndarray, r0: int, r1: int, c0: int, c1: int, out: np.ndarray) -> np.ndarray:
    """Write `_seg2bmap(seg)[r0:r1+1, c0:c1+1]` into the uint8 array `out` (0 / 1).

    A pixel is a boundary pixel when its 2x2 block {p, E, S, SE} is not uniform, i.e. when the
    block's max differs from its min: a 2x2 dilation XOR a 2x2 erosion (anchored at the top-left)
    -- two SIMD OpenCV passes instead of six numpy ones. The toolkit's special cases for the last
    row / column equal the same rule on the mask extended by edge replication, which is both
    OpenCV's BORDER_REPLICATE and what lets us compute only a window (plus one row / column):
    inside the image the extra row / column is real data.
    """
    h, w = seg.shape
    win = seg[r0 : min(r1 + 2, h), c0 : min(c1 + 2, w)].view(np.uint8)
    hi = _scratch_array("hi", win.shape, np.uint8)
    lo = _scratch_array("lo", win.shape, np.uint8)
    cv2.dilate(win, _BLOCK_2X2, dst=hi, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    cv2.erode(win, _BLOCK_2X2, dst=lo, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    rows, cols = r1 - r0 + 1, c1 - c0 + 1
    cv2.bitwise_xor(hi[:rows, :cols], lo[:rows, :cols], dst=out)
    return out


def _boundary_extent(seg: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive (r0, r1, c0, c1) window that holds every boundary pixel of `seg`, or None."""
    # cv2.boundingRect reads a bool array through a uint8 view without a copy and is ~100x
    # faster than np.any over rows and columns.
    x, y, bw, bh = cv2.boundingRect(np.ascontiguousarray(seg).view(np.uint8))
    if bw == 0 or bh == 0:
        return None
    # boundary pixels sit half a pixel towards the origin: one row above / column left of the mask
    return max(y - 1, 0), y + bh - 1, max(x - 1, 0), x + bw - 1


@lru_cache(maxsize=32)
def _disk_rectangles(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-widths and half-heights of rectangles whose union is skimage's `disk(radius)`.

    Row dy of the disk spans |dx| <= isqrt(r^2 - dy^2); that width only shrinks as |dy| grows, so
    for each distinct width v the rows with width >= v form one rectangle, and the union of these
    "staircase" rectangles is exactly {dx^2 + dy^2 <= r^2}.
    """
    half_w = np.array([math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)])
    widths = np.unique(half_w)
    half_h = np.array([int(np.nonzero(half_w >= v)[0].max()) for v in widths])
    return widths.astype(np.int64), half_h.astype(np.int64)


def _box_offsets(half_w: np.ndarray, half_h: np.ndarray, row_stride: int) -> np.ndarray:
    """Flat offsets of the 4 summed-area-table corners of centred boxes, shape (4, K)."""
    below, above = (half_h + 1) * row_stride, -half_h * row_stride
    return np.stack([below + half_w + 1, above + half_w + 1, below - half_w, above - half_w])


def _box_hit(table: np.ndarray, base: np.ndarray, half_w: int, half_h: int, row_stride: int) -> np.ndarray:
    """Per target: does the box of half-size (half_w, half_h) centred on it hold a source pixel."""
    below, above = base + (half_h + 1) * row_stride, base - half_h * row_stride
    count = table[below + (half_w + 1)] - table[above + (half_w + 1)]
    count -= table[below - half_w]
    count += table[above - half_w]
    return count > 0


def _boxes_hit(table: np.ndarray, base: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(N, K) booleans: does box k centred on target n hold any source pixel."""
    c = table[base[:, None, None] + offsets[None]]
    return (c[:, 0] - c[:, 1] - c[:, 2] + c[:, 3]) > 0


def _summed_area_table(sources: np.ndarray) -> np.ndarray:
    """Flat int32 summed-area table of a boolean map (a per-thread scratch buffer)."""
    h, w = sources.shape
    table = _scratch_array("table", (h + 1, w + 1), np.int32)
    cv2.integral(sources.view(np.uint8), sum=table, sdepth=cv2.CV_32S)
    return table.ravel()


def _count_within(targets: np.ndarray, sources: np.ndarray, region: tuple[int, int, int, int], radius: int) -> int:
    """How many target pixels inside `region` have a source pixel within the disk of `radius`.

    `targets` and `sources` are boolean maps padded by at least `radius` zeros around
    `region` (inclusive row / column bounds), so the sources that can reach a target in the
    region all lie in the region grown by `radius`. The disk is a union of rectangles
    (`_disk_rectangles`), each tested with four look-ups in the summed-area table of those
    sources. Most targets are settled by one or two boxes -- a source in the disk's largest
    rectangle is a match, none in its bounding square is no match -- so only the rest are
    tested against every rectangle.
    """
    a0, a1, b0, b1 = region
    if a0 > a1 or b0 > b1:
        return 0
    flat = np.flatnonzero(targets[a0 : a1 + 1, b0 : b1 + 1])
    if flat.size == 0:
        return 0
    table = _summed_area_table(sources[a0 - radius : a1 + radius + 1, b0 - radius : b1 + radius + 1])
    width = b1 - b0 + 1
    stride = width + 2 * radius + 1  # row length of the table
    rows = flat // width
    base = (rows + radius) * stride + (flat - rows * width + radius)
    half_w, half_h = _disk_rectangles(radius)
    largest = int(np.argmax((2 * half_w + 1) * (2 * half_h + 1)))
    in_largest = _box_hit(table, base, int(half_w[largest]), int(half_h[largest]), stride)
    matched = int(np.count_nonzero(in_largest))
    base = base[~in_largest]
    if base.size:
        base = base[_box_hit(table, base, radius, radius, stride)]
    if base.size:
        matched += int(np.count_nonzero(_boxes_hit(table, base, _box_offsets(half_w, half_h, stride)).any(axis=1)))
    return matched


def _boundary_counts(fg: np.ndarray, gt: np.ndarray, bound_pix: float) -> tuple[int, int, int, int]:
    """(fg boundary pixels matched, fg boundary pixels, gt matched, gt boundary pixels).

    Same counts as the toolkit's full-frame `cv2.dilate(boundary, disk(bound_pix))`, with the
    work confined to where it can matter: each boundary map is computed only over its mask's
    extent, a boundary pixel is tested only if it lies within `bound_pix` (per axis) of the
    other boundary's extent -- farther ones cannot match -- and against the other boundary's
    pixels around it only, by summed-area look-ups instead of dilating whole maps.
    """
    ext_fg, ext_gt = _boundary_extent(fg), _boundary_extent(gt)
    extents = [e for e in (ext_fg, ext_gt) if e is not None]
    if not extents:
        return 0, 0, 0, 0
    radius = int(bound_pix)
    # canvas = the window holding both extents, with `radius` zeros around it; canvas
    # coordinates are image coordinates shifted by (radius - r0, radius - c0)
    r0 = min(e[0] for e in extents)
    c0 = min(e[2] for e in extents)
    rows = max(e[1] for e in extents) - r0 + 1
    cols = max(e[3] for e in extents) - c0 + 1

    def on_canvas(ext: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return ext[0] - r0 + radius, ext[1] - r0 + radius, ext[2] - c0 + radius, ext[3] - c0 + radius

    def boundary_canvas(seg: np.ndarray, ext: Any, name: str) -> np.ndarray:
        canvas = _scratch_array(name, (rows + 2 * radius, cols + 2 * radius), np.uint8)
        canvas.fill(0)
        if ext is not None:
            e0, e1, e2, e3 = on_canvas(ext)
            _boundary_window(seg, *ext, out=canvas[e0 : e1 + 1, e2 : e3 + 1])
        return canvas.view(bool)

    b_fg, b_gt = boundary_canvas(fg, ext_fg, "canvas_fg"), boundary_canvas(gt, ext_gt, "canvas_gt")
    n_fg, n_gt = int(np.count_nonzero(b_fg)), int(np.count_nonzero(b_gt))
    if n_fg == 0 or n_gt == 0:
        return 0, n_fg, 0, n_gt

    def reachable(target_ext: Any, source_ext: Any) -> tuple[int, int, int, int]:
        # target extent clipped to the source extent grown by radius: stays inside the window,
        # so the region grown by radius stays inside the canvas
        t, s = on_canvas(target_ext), on_canvas(source_ext)
        return max(t[0], s[0] - radius), min(t[1], s[1] + radius), max(t[2], s[2] - radius), min(t[3], s[3] + radius)

    fg_match = _count_within(b_fg, b_gt, reachable(ext_fg, ext_gt), radius)
    gt_match = _count_within(b_gt, b_fg, reachable(ext_gt, ext_fg), radius)
    return fg_match, n_fg, gt_match, n_gt


def _skimage_disk(radius: float) -> np.ndarray:
    # skimage.morphology.disk as the toolkit calls it (also for a non-integer radius, where the
    # grid np.arange(-r, r + 1) is offset by half a pixel).
    grid = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


def _boundary_counts_full_frame(fg: np.ndarray, gt: np.ndarray, bound_pix: float) -> tuple[int, int, int, int]:
    """The toolkit's own full-frame algorithm; used only for a non-integer pixel tolerance."""
    b_fg, b_gt = boundary_map(fg), boundary_map(gt)
    kernel = _skimage_disk(bound_pix)
    fg_dil = cv2.dilate(b_fg.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(b_gt.astype(np.uint8), kernel)
    return (
        int(np.count_nonzero(b_fg & (gt_dil > 0))),
        int(np.count_nonzero(b_fg)),
        int(np.count_nonzero(b_gt & (fg_dil > 0))),
        int(np.count_nonzero(b_gt)),
    )


def _f_from_counts(fg_match: int, n_fg: int, gt_match: int, n_gt: int) -> float:
    # Edge cases and arithmetic in the toolkit's order, so values agree to the last bit.
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = fg_match / float(n_fg)
        recall = gt_match / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def _boundary_f_frame(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None, bound_th: float) -> float:
    if void is not None:
        keep = ~void
        gt, pred = gt & keep, pred & keep
    bound_pix = boundary_radius(gt.shape[0], gt.shape[1], bound_th)
    diagonal = math.hypot(gt.shape[0], gt.shape[1])
    if bound_pix >= diagonal + 1:
        # every pixel is within the tolerance of every other one, so any larger radius gives the
        # same counts; without the cap a huge bound_th would allocate a huge padded window
        bound_pix = float(math.ceil(diagonal))
    if bound_pix == int(bound_pix):
        counts = _boundary_counts(np.ascontiguousarray(pred), np.ascontiguousarray(gt), bound_pix)
    else:
        counts = _boundary_counts_full_frame(pred, gt, bound_pix)
    return _f_from_counts(*counts)


def boundary_f(gt: Any, pred: Any, bound_th: float = DEFAULT_BOUND_TH, void: Any = None) -> float | np.ndarray:
    """Boundary F-measure, exactly as the toolkit's `db_eval_boundary` / `f_measure`.

    Boundaries come from `boundary_map`; a predicted boundary pixel is correct when a
    ground-truth boundary pixel lies within the disk of radius `boundary_radius(h, w, bound_th)`
    (x^2 + y^2 <= r^2) and vice versa for recall. F = 2PR / (P + R). Edge cases as the
    toolkit: both boundaries empty -> 1; only the prediction's empty -> P=1, R=0 -> 0; only the
    ground truth's empty -> 0.

    Args:
        gt: ground-truth mask, (H, W) or (T, H, W).
        pred: predicted mask of the same shape.
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in pixels (>= 1).
        void: optional mask of ignored pixels (removed from both masks first, as the toolkit).

    Returns:
        A float for one frame, a float64 array of per-frame values for a stack.

    Raises:
        MaskError: shapes differ or are not 2-D / 3-D. ConfigError: a negative `bound_th`.
    """
    gt_b, pred_b, void_b = _as_mask_pair(gt, pred, void)
    boundary_radius(gt_b.shape[-2], gt_b.shape[-1], bound_th)  # validate once
    if gt_b.ndim == 2:
        return _boundary_f_frame(gt_b, pred_b, void_b, bound_th)
    out = np.zeros(gt_b.shape[0], dtype=np.float64)
    for t in range(gt_b.shape[0]):
        out[t] = _boundary_f_frame(gt_b[t], pred_b[t], None if void_b is None else void_b[t], bound_th)
    return out


# --------------------------------------------------------------------------------------------
# J&F and per-sequence statistics
# --------------------------------------------------------------------------------------------


def j_and_f(gt: Any, pred: Any, bound_th: float = DEFAULT_BOUND_TH, void: Any = None) -> tuple[Any, Any, Any]:
    """(J, F, (J + F) / 2) for one frame (floats) or a stack (per-frame arrays)."""
    j = jaccard(gt, pred, void=void)
    f = boundary_f(gt, pred, bound_th=bound_th, void=void)
    return j, f, (j + f) / 2


def score_expression(gt_masks: Any, pred_masks: Any, bound_th: float = DEFAULT_BOUND_TH) -> dict[str, Any]:
    """Score one referring expression: the prediction's (T, H, W) masks against the ground truth.

    Returns `{"J", "F", "J&F", "J_frames", "F_frames", "frames"}`: J and F are means over the
    frames (MeViS / ReferFormer convention), J&F their average; the per-frame lists are plain
    floats so the dict can go straight into JSON.
    """
    gt_arr, pred_arr = np.asarray(gt_masks), np.asarray(pred_masks)
    if gt_arr.ndim == 2 and pred_arr.ndim == 2:
        gt_arr, pred_arr = gt_arr[None], pred_arr[None]
    if gt_arr.ndim == 3 and gt_arr.shape[0] == 0:
        raise MaskError("score_expression needs at least one annotated frame, got 0")
    j = np.atleast_1d(jaccard(gt_arr, pred_arr))
    f = np.atleast_1d(boundary_f(gt_arr, pred_arr, bound_th=bound_th))
    jm, fm = float(np.mean(j)), float(np.mean(f))
    return {
        "J": jm,
        "F": fm,
        "J&F": (jm + fm) / 2,
        "J_frames": j.tolist(),
        "F_frames": f.tolist(),
        "frames": int(j.size),
    }


def db_statistics(per_frame: Any) -> tuple[float, float, float]:
    """Per-sequence (mean, recall, decay) of per-frame J or F values, as the toolkit's `db_statistics`.

    mean ignores NaN; recall is the fraction of frames scoring > 0.5; decay is the mean of the
    first quarter of the frames minus the mean of the last quarter, with the toolkit's bin
    edges `round(linspace(1, T, 5) + 1e-10) - 1` and its inclusive (one-frame-overlapping) bins.

    Difference from the toolkit: it casts the bin edges to uint8, so for sequences longer than
    256 frames the edges wrap around modulo 256 and the decay is computed on the wrong frames
    (or on empty bins, giving NaN); at exactly 256 frames `edge + 1` overflows uint8 under
    NumPy 2 and the last bin is empty. We keep the edges as int64, so values agree with the
    toolkit for T <= 255 and are the intended ones beyond. An empty sequence gives NaN for all
    three.
    """
    values = np.asarray(per_frame, dtype=np.float64).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values)) if values.size else float("nan")
        recall = float(np.nanmean(values > 0.5)) if values.size else float("nan")
        n_bins = 4
        ids = (np.round(np.linspace(1, len(values), n_bins + 1) + 1e-10) - 1).astype(np.int64)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(n_bins)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3])) if values.size else float("nan")
    return mean, recall, decay


# --------------------------------------------------------------------------------------------
# points (Molmo pointing protocol)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointScore:
    """Point precision / recall / F1 of one image or frame, with the counts behind them."""

    precision: float
    recall: float
    f1: float
    hits: int
    n_pred: int
    n_gt: int


def _as_points(points: Any, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) as (x, y) pixels, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr).all(axis=1)].tolist()}")
    return arr


def _pixel_index(points: np.ndarray, rule: str) -> np.ndarray:
    if rule == "floor":
        return np.floor(points).astype(np.int64)
    if rule == "round":
        # Python's round() (half to even), as Molmo's is_point_in_region; np.round matches it.
        return np.round(points).astype(np.int64)
    raise ConfigError(f"pixel rule must be 'floor' or 'round', got {rule!r}")


def point_hits_mask(points: Any, mask: Any, rule: Literal["floor", "round"] = "floor") -> np.ndarray:
    """For each (x, y) pixel point, whether it falls inside the (H, W) mask.

    `rule="floor"` is this package's contract (a point at x is column int(x)); `"round"` is
    Molmo's `is_point_in_region`. Points outside the image never hit.
    """
    pts = _as_points(points, "points")
    m = np.asarray(mask)
    if m.ndim != 2:
        raise MaskError(f"point_hits_mask needs an (H, W) mask, got shape {m.shape}")
    idx = _pixel_index(pts, rule)
    h, w = m.shape
    xs, ys = idx[:, 0], idx[:, 1]
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    hits = np.zeros(len(pts), dtype=bool)
    hits[inside] = m[ys[inside], xs[inside]].astype(bool)
    return hits


def point_prf(
    pred_points: Any,
    gt_points: Any,
    gt_masks: Any,
    rule: Literal["floor", "round"] = "floor",
) -> PointScore:
    """Point precision / recall / F1 with Molmo's pointing protocol (`PointingEval`).

    Predicted points are matched one-to-one to ground-truth points by Hungarian matching
    (`scipy.optimize.linear_sum_assignment`) on Euclidean pixel distance; a matched pair is a
    hit when the predicted point lies inside that ground-truth object's mask. precision =
    hits / predictions, recall = hits / ground-truth objects, F1 = 2PR / (P + R) (0 when P or R
    is 0). No ground truth and no prediction -> 1 for all three; predictions without ground
    truth, or ground truth without predictions -> 0.

    Differences from Molmo's code, on purpose: Molmo matches pixel predictions against
    ground-truth points stored in 0-100 percent units (so the matching is distorted); we match
    both in pixels. Molmo's F1 adds 1e-10 to the denominator; we do not (F1 differs by < 1e-10).

    Args:
        pred_points: (N, 2) predicted (x, y) in pixels.
        gt_points: (M, 2) ground-truth (x, y) in pixels, one per object.
        gt_masks: M masks (a sequence of (H, W) arrays or one (M, H, W) array), one per object.
        rule: how a point maps to a pixel, "floor" (package contract) or "round" (Molmo).
    """
    preds = _as_points(pred_points, "pred_points")
    gts = _as_points(gt_points, "gt_points")
    if isinstance(gt_masks, np.ndarray) and gt_masks.ndim != 3:
        raise MaskError(f"gt_masks must be M masks of shape (H, W), got an array of shape {gt_masks.shape}")
    masks = list(gt_masks)
    if len(masks) != len(gts):
        raise MaskError(f"got {len(gts)} ground-truth points but {len(masks)} ground-truth masks")
    hits = 0
    if len(preds) and len(gts):
        rows, cols = linear_sum_assignment(cdist(preds, gts))
        for i, j in zip(rows, cols):
            hits += int(point_hits_mask(preds[i : i + 1], masks[j], rule=rule)[0])
    return prf_from_counts(hits, len(preds), len(gts))


def prf_from_counts(hits: int, n_pred: int, n_gt: int) -> PointScore:
    """Precision / recall / F1 from hit and point counts (of one frame, or summed over many).

    Nothing predicted and nothing to find scores 1; one side empty scores 0."""
    if n_gt == 0:
        v = float(n_pred == 0)
        return PointScore(v, v, v, hits, n_pred, 0)
    if n_pred == 0:
        return PointScore(0.0, 0.0, 0.0, 0, 0, n_gt)
    precision = hits / n_pred
    recall = hits / n_gt
    f1 = 0.0 if precision == 0 or recall == 0 else 2 * precision * recall / (precision + recall)
    return PointScore(precision, recall, f1, hits, n_pred, n_gt)


# --------------------------------------------------------------------------------------------
# counting
# --------------------------------------------------------------------------------------------


def _as_counts(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    g = np.asarray(gt, dtype=np.float64).ravel()
    if p.shape != g.shape:
        raise ValueError(f"got {p.size} predicted counts but {g.size} ground-truth counts")
    if p.size == 0:
        raise ValueError("counting metrics need at least one count")
    return p, g


def count_mae(pred: Any, gt: Any) -> float:
    """Mean absolute error between predicted and ground-truth object counts."""
    p, g = _as_counts(pred, gt)
    return float(np.mean(np.abs(p - g)))


def count_accuracy(pred: Any, gt: Any, tolerance: int = 0) -> float:
    """Fraction of counts within `tolerance` of the truth (0 = exact match; Molmo's "close" is 1)."""
    p, g = _as_counts(pred, gt)
    return float(np.mean(np.abs(p - g) <= tolerance))
