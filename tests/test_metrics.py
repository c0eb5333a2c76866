"""Metrics against first-principles implementations of the DAVIS 2017 toolkit's definitions.

Expected values are computed here, independently of `videomolmo.metrics`: the boundary map by
the toolkit's literal rule (E/S/SE neighbour XOR, last row E only, last column S only, corner
0), the tolerance disk by enumerating x^2 + y^2 <= r^2, full-frame dilation with
`scipy.ndimage.binary_dilation`, and the toolkit's precision / recall / F edge cases.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from videomolmo import metrics
from videomolmo.errors import ConfigError, MaskError, VideoMolmoError
from videomolmo.metrics import (
    PointScore,
    boundary_f,
    boundary_map,
    boundary_radius,
    count_accuracy,
    count_mae,
    db_statistics,
    j_and_f,
    jaccard,
    point_hits_mask,
    point_prf,
    score_expression,
)
from videomolmo.parallel import parallel_map
from conftest import DAVIS, needs_davis  # noqa: E402

TOL = 1e-9


# ---------------------------------------------------------------------------------------------
# first-principles reference
# ---------------------------------------------------------------------------------------------


def ref_boundary(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    h, w = seg.shape
    b = np.zeros((h, w), dtype=bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1)):  # E, S, SE; outside the image counts as 0 here
        nb = np.zeros((h, w), dtype=bool)
        nb[: h - dy, : w - dx] = seg[dy:, dx:]
        b |= seg != nb
    # the toolkit overrides the last row (E neighbour only), the last column (S only), the corner
    last_row_e = np.zeros(w, dtype=bool)
    last_row_e[:-1] = seg[-1, 1:]
    b[-1, :] = seg[-1, :] != last_row_e
    last_col_s = np.zeros(h, dtype=bool)
    last_col_s[:-1] = seg[1:, -1]
    b[:, -1] = seg[:, -1] != last_col_s
    b[-1, -1] = False
    return b


def ref_disk(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    disk = np.zeros((size, size), dtype=bool)
    for y in range(size):
        for x in range(size):
            disk[y, x] = (x - radius) ** 2 + (y - radius) ** 2 <= radius**2
    return disk


def ref_dilate(b: np.ndarray, radius: int, method: str) -> np.ndarray:
    """Pixels within Euclidean distance `radius` of a pixel of `b` (disk dilation, full frame)."""
    if not b.any():
        return b.copy()
    if method == "morphology":
        return ndimage.binary_dilation(b, structure=ref_disk(radius))
    # squared distance to the nearest pixel of b is an integer; rint undoes sqrt's rounding
    dist = ndimage.distance_transform_edt(~b)
    return np.rint(dist * dist) <= radius * radius


def ref_f(
    gt: np.ndarray,
    pred: np.ndarray,
    bound_th: float = 0.008,
    void: np.ndarray | None = None,
    method: str = "morphology",
) -> float:
    if void is not None:
        gt, pred = gt & ~void, pred & ~void
    h, w = gt.shape
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))
    assert radius == int(radius)
    fg_b, gt_b = ref_boundary(pred), ref_boundary(gt)
    fg_dil = ref_dilate(fg_b, int(radius), method)
    gt_dil = ref_dilate(gt_b, int(radius), method)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_fg == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int((fg_b & gt_dil).sum()) / n_fg
        recall = int((gt_b & fg_dil).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_j(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    keep = np.ones_like(gt, dtype=bool) if void is None else ~void
    union = int(((gt | pred) & keep).sum())
    return 1.0 if union == 0 else int((gt & pred & keep).sum()) / union


def test_reference_agrees_with_hand_worked_example():
    # a 2x2 square in a 5x5 image: its N / W / NW rims and three of its own pixels are boundary;
    # its top-left pixel is not (E, S and SE are all inside the square)
    seg = np.zeros((5, 5), bool)
    seg[2:4, 2:4] = True
    expected = np.zeros((5, 5), bool)
    expected[1:4, 1:4] = True
    expected[2, 2] = False
    np.testing.assert_array_equal(ref_boundary(seg), expected)
    assert ref_disk(1).sum() == 5 and ref_disk(8).sum() == 197
    rng = np.random.default_rng(6)
    b = rng.random((60, 90)) < 0.01
    for radius in (0, 1, 3, 8):
        np.testing.assert_array_equal(ref_dilate(b, radius, "morphology"), ref_dilate(b, radius, "distance"))


# ---------------------------------------------------------------------------------------------
# real masks
# ---------------------------------------------------------------------------------------------


def _davis_gt(video: str, index: int) -> np.ndarray:
    files = sorted((DAVIS / "Annotations" / video).glob("*.png"))
    return np.array(Image.open(files[min(index, len(files) - 1)])) > 0


def _variants(gt: np.ndarray, later: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    shifted = np.zeros_like(gt)
    dy, dx = int(rng.integers(-25, 26)), int(rng.integers(-40, 41))
    src = gt[max(0, -dy) : gt.shape[0] - max(0, dy), max(0, -dx) : gt.shape[1] - max(0, dx)]
    shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return {
        "eroded": ndimage.binary_erosion(gt, iterations=4),
        "dilated": ndimage.binary_dilation(gt, iterations=6),
        "shifted": shifted,
        "emptied": np.zeros_like(gt),
        "later frame": later,
        "noisy": gt ^ (rng.random(gt.shape) < 0.002),
    }


@needs_davis
def test_matches_toolkit_definition_on_davis_masks():
    videos = sorted(p.name for p in (DAVIS / "Annotations").iterdir() if p.is_dir())
    assert videos
    rng = np.random.default_rng(0)
    checked = 0
    for i, video in enumerate(videos):
        gt = _davis_gt(video, 5 + 7 * i)
        later = _davis_gt(video, 15 + 7 * i)
        assert gt.shape == (480, 854) and gt.any()
        for name, pred in _variants(gt, later, rng).items():
            # F and J are symmetric in their arguments: one reference value checks both orders
            want_f, want_j = ref_f(gt, pred, method="distance"), ref_j(gt, pred)
            for a, b in ((gt, pred), (pred, gt)):
                got_f = boundary_f(a, b)
                assert abs(got_f - want_f) <= TOL, (video, name, got_f, want_f)
                got_j = jaccard(a, b)
                assert abs(got_j - want_j) <= TOL, (video, name, got_j, want_j)
                checked += 1
    assert checked == 2 * 6 * len(videos)


@needs_davis
def test_sequence_input_gives_per_frame_values():
    gt = np.stack([_davis_gt("dog", t) for t in (0, 10, 20)])
    pred = np.stack([_davis_gt("dog", t) for t in (3, 13, 23)])
    j, f = jaccard(gt, pred), boundary_f(gt, pred)
    assert isinstance(j, np.ndarray) and j.dtype == np.float64 and j.shape == (3,)
    assert isinstance(f, np.ndarray) and f.dtype == np.float64 and f.shape == (3,)
    for t in range(3):
        assert abs(j[t] - ref_j(gt[t], pred[t])) <= TOL
        assert abs(f[t] - ref_f(gt[t], pred[t], method="distance")) <= TOL
    assert 0.3 < j.mean() < 1 and 0.3 < f.mean() < 1


# ---------------------------------------------------------------------------------------------
# edge cases
# ---------------------------------------------------------------------------------------------


def test_empty_and_full_masks_follow_toolkit_edge_cases():
    empty = np.zeros((30, 40), bool)
    full = np.ones((30, 40), bool)
    blob = np.zeros((30, 40), bool)
    blob[10:20, 5:25] = True
    assert jaccard(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert jaccard(blob, empty) == 0.0 and boundary_f(blob, empty) == 0.0  # P=1, R=0
    assert jaccard(empty, blob) == 0.0 and boundary_f(empty, blob) == 0.0  # P=0, R=1
    assert jaccard(full, full) == 1.0 and boundary_f(full, full) == 1.0
    # a full mask has no boundary (the image border never is one), so against an empty mask
    # both boundaries are empty and F is 1, as in the toolkit, while J is 0
    assert not boundary_map(full).any()
    assert jaccard(full, empty) == 0.0 and boundary_f(full, empty) == 1.0
    assert boundary_f(full, blob) == ref_f(full, blob) == 0.0


def test_one_pixel_masks_and_border_touching_masks():
    h, w = 40, 50
    for y, x in [(0, 0), (0, 49), (39, 0), (39, 49), (20, 25), (39, 10), (7, 49)]:
        one = np.zeros((h, w), bool)
        one[y, x] = True
        np.testing.assert_array_equal(boundary_map(one), ref_boundary(one))
        other = np.zeros((h, w), bool)
        other[min(y + 1, h - 1), max(x - 2, 0)] = True
        assert abs(boundary_f(one, other) - ref_f(one, other)) <= TOL
        assert abs(boundary_f(one, one) - ref_f(one, one)) <= TOL
    bottom_right = np.zeros((h, w), bool)
    bottom_right[25:, 30:] = True
    left_strip = np.zeros((h, w), bool)
    left_strip[:, :3] = True
    for a, b in [(bottom_right, left_strip), (left_strip, bottom_right), (bottom_right, bottom_right)]:
        np.testing.assert_array_equal(boundary_map(a), ref_boundary(a))
        assert abs(boundary_f(a, b) - ref_f(a, b)) <= TOL


def test_tiny_images_exhaustive_and_random():
    # every pair of 2x2 masks, then random masks on tiny and thin images
    masks = [np.array([(k >> i) & 1 for i in range(4)], bool).reshape(2, 2) for k in range(16)]
    for a in masks:
        np.testing.assert_array_equal(boundary_map(a), ref_boundary(a))
        for b in masks:
            assert abs(boundary_f(a, b) - ref_f(a, b)) <= TOL
            assert abs(jaccard(a, b) - ref_j(a, b)) <= TOL
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (1, 7), (7, 1), (3, 3), (5, 9), (16, 3), (33, 47)]:
        for density in (0.1, 0.5, 0.9):
            for _ in range(3):
                a, b = rng.random(shape) < density, rng.random(shape) < density
                np.testing.assert_array_equal(boundary_map(a), ref_boundary(a))
                for th in (0.008, 0.05, 0, 2, 3):
                    assert abs(boundary_f(a, b, bound_th=th) - ref_f(a, b, bound_th=th)) <= TOL


def test_random_blobs_with_many_tolerances():
    rng = np.random.default_rng(2)
    for _ in range(12):
        h, w = int(rng.integers(20, 120)), int(rng.integers(20, 160))
        noise = ndimage.gaussian_filter(rng.random((h, w)), 3)
        a = noise > np.quantile(noise, rng.uniform(0.3, 0.9))
        b = np.roll(a, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1)) ^ (rng.random((h, w)) < 0.01)
        for th in (0.008, 0.02, 0.1, 1, 4, 11):
            assert abs(boundary_f(a, b, bound_th=th) - ref_f(a, b, bound_th=th)) <= TOL


def test_tolerance_larger_than_the_image():
    rng = np.random.default_rng(7)
    a = ndimage.binary_dilation(rng.random((30, 40)) < 0.01, iterations=2)
    b = np.roll(a, (9, -13), axis=(0, 1))
    want = ref_f(a, b, bound_th=50)  # 50 px > the 50-px diagonal: everything matches
    assert want == 1.0
    for th in (50, 1e6, 1e6 + 0.5, 0.999):
        assert boundary_f(a, b, bound_th=th) == want


def test_non_integer_pixel_tolerance_matches_toolkit_kernel():
    # bound_th >= 1 is used as is; for 1.5 the toolkit's skimage disk is a 4x4 grid offset by
    # half a pixel, applied with cv2.dilate: replicate that literally
    import cv2

    rng = np.random.default_rng(3)
    a = ndimage.binary_dilation(rng.random((40, 60)) < 0.02, iterations=2)
    b = np.roll(a, 2, axis=1)
    grid = np.arange(-1.5, 2.5)
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx**2 + yy**2 <= 1.5**2).astype(np.uint8)
    fb, gb = ref_boundary(b), ref_boundary(a)
    fd = cv2.dilate(fb.astype(np.uint8), kernel) > 0
    gd = cv2.dilate(gb.astype(np.uint8), kernel) > 0
    p, r = (fb & gd).sum() / fb.sum(), (gb & fd).sum() / gb.sum()
    assert abs(boundary_f(a, b, bound_th=1.5) - 2 * p * r / (p + r)) <= TOL


def test_void_pixels_are_ignored():
    rng = np.random.default_rng(4)
    a = ndimage.binary_dilation(rng.random((50, 70)) < 0.01, iterations=3)
    b = ndimage.binary_dilation(a, iterations=2)
    void = np.zeros_like(a)
    void[:, 40:] = True
    assert abs(jaccard(a, b, void=void) - ref_j(a, b, void)) <= TOL
    assert abs(boundary_f(a, b, void=void) - ref_f(a, b, void=void)) <= TOL
    assert jaccard(a, a | void, void=void) == 1.0


def test_boundary_radius():
    assert boundary_radius(480, 854) == 8.0
    assert boundary_radius(480, 854, 3) == 3.0
    assert boundary_radius(1080, 1920) == math.ceil(0.008 * math.hypot(1080, 1920))
    with pytest.raises(ConfigError):
        boundary_radius(10, 10, -0.1)


def test_bad_shapes_raise_mask_error():
    with pytest.raises(MaskError, match=r"\(10, 12\).*\(10, 11\)"):
        jaccard(np.zeros((10, 11), bool), np.zeros((10, 12), bool))
    with pytest.raises(MaskError):
        boundary_f(np.zeros((2, 10, 11), bool), np.zeros((3, 10, 11), bool))
    with pytest.raises(MaskError):
        boundary_f(np.zeros(10, bool), np.zeros(10, bool))
    with pytest.raises(MaskError):
        jaccard(np.zeros((1, 2, 3, 4), bool), np.zeros((1, 2, 3, 4), bool))
    with pytest.raises(MaskError):
        boundary_f(np.zeros((5, 5), bool), np.zeros((5, 5), bool), void=np.zeros((5, 6), bool))
    with pytest.raises(ConfigError):
        boundary_f(np.zeros((5, 5), bool), np.zeros((5, 5), bool), bound_th=float("nan"))


def test_non_bool_masks_count_nonzero_as_foreground():
    a = np.zeros((20, 20), np.uint8)
    a[5:15, 5:15] = 255
    b = np.zeros((20, 20), np.int64)
    b[6:15, 5:15] = 1
    assert jaccard(a, b) == ref_j(a > 0, b > 0)
    assert boundary_f(a, b) == pytest.approx(ref_f(a > 0, b > 0), abs=TOL)


# ---------------------------------------------------------------------------------------------
# J&F and statistics
# ---------------------------------------------------------------------------------------------


def test_j_and_f_and_score_expression():
    gt = np.zeros((3, 30, 30), bool)
    gt[:, 8:20, 8:20] = True
    pred = gt.copy()
    pred[1] = False
    j, f, jf = j_and_f(gt, pred)
    np.testing.assert_allclose(jf, (j + f) / 2)
    s = score_expression(gt, pred)
    assert s["frames"] == 3
    assert s["J_frames"] == [1.0, 0.0, 1.0] and s["F_frames"] == [1.0, 0.0, 1.0]
    assert s["J"] == pytest.approx(2 / 3) and s["F"] == pytest.approx(2 / 3) and s["J&F"] == pytest.approx(2 / 3)
    single = score_expression(gt[0], pred[0])
    assert single["frames"] == 1 and single["J&F"] == 1.0
    j1, f1, jf1 = j_and_f(gt[0], pred[0])
    assert isinstance(j1, float) and jf1 == 1.0
    with pytest.raises(MaskError):
        score_expression(gt, pred[:2])


def _toolkit_statistics(values: np.ndarray, id_dtype) -> tuple[float, float, float]:
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(id_dtype)
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
        return float(np.nanmean(values)), float(np.nanmean(values > 0.5)), float(np.nanmean(bins[0]) - np.nanmean(bins[3]))


def test_db_statistics_matches_toolkit_up_to_255_frames():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 5, 17, 100, 255):
        values = rng.random(n)
        assert db_statistics(values) == pytest.approx(_toolkit_statistics(values, np.uint8), abs=TOL)
    mean, recall, decay = db_statistics(np.array([1.0, 0.9, 0.6, 0.4, 0.2]))
    # bins (inclusive ends): [0:2], [1:3], [2:4], [3:5] -> first (1 + .9) / 2, last (.4 + .2) / 2
    assert mean == pytest.approx(0.62) and recall == pytest.approx(0.6) and decay == pytest.approx(0.95 - 0.3)


def test_db_statistics_decay_is_right_past_256_frames():
    n = 1000
    values = np.linspace(1.0, 0.0, n)  # steadily decaying
    _, _, decay = db_statistics(values)
    edges = [round(1 + k * (n - 1) / 4) - 1 for k in range(5)]  # 0, 250, 500, 749, 999
    want = values[edges[0] : edges[1] + 1].mean() - values[edges[3] : edges[4] + 1].mean()
    assert decay == pytest.approx(want, abs=TOL) and decay == pytest.approx(0.75, abs=1e-3)
    # the toolkit's uint8 bin edges wrap past 255 and give a different (wrong) decay here
    toolkit_decay = _toolkit_statistics(values, np.uint8)[2]
    assert not toolkit_decay == pytest.approx(want, abs=1e-3)
    # at exactly 256 frames the last edge is 255 and "+ 1" overflows uint8 under NumPy 2: the
    # toolkit's last bin is empty (NaN decay); ours is the intended value
    values = np.linspace(1.0, 0.0, 256)
    assert math.isnan(_toolkit_statistics(values, np.uint8)[2]) or np.__version__.startswith("1.")
    assert db_statistics(values)[2] == pytest.approx(_toolkit_statistics(values, np.int64)[2], abs=TOL)


def test_db_statistics_ignores_nan_in_mean():
    mean, recall, _ = db_statistics([1.0, np.nan, 0.0])
    assert mean == 0.5 and recall == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------------------------
# points and counting
# ---------------------------------------------------------------------------------------------


def _square(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_point_prf_empty_cases():
    mask = _square(20, 30, 2, 8, 2, 8)
    assert point_prf([], [], []) == PointScore(1.0, 1.0, 1.0, 0, 0, 0)
    assert point_prf([[3, 3]], [], []) == PointScore(0.0, 0.0, 0.0, 0, 1, 0)
    assert point_prf(np.zeros((0, 2)), [[4, 4]], [mask]) == PointScore(0.0, 0.0, 0.0, 0, 0, 1)


def test_point_prf_hungarian_matching_in_pixels():
    h, w = 60, 100
    left, right = _square(h, w, 10, 50, 0, 40), _square(h, w, 10, 50, 60, 100)
    gt_points = [[20.0, 30.0], [80.0, 30.0]]
    # one prediction per object, given in the opposite order: matching must pair them correctly
    s = point_prf([[85.0, 25.0], [15.0, 35.0]], gt_points, [left, right])
    assert (s.precision, s.recall, s.f1, s.hits) == (1.0, 1.0, 1.0, 2)
    # greedy nearest-first would give both to the left object; the optimal assignment pairs
    # the prediction at x=39 with the left object and the one at x=45 with the right object
    s = point_prf([[39.0, 30.0], [45.0, 30.0]], [[30.0, 30.0], [70.0, 30.0]], [left, right])
    assert s.hits == 1 and s.precision == 0.5 and s.recall == 0.5  # x=45 is outside the right mask
    # an extra prediction lowers precision only
    s = point_prf([[20.0, 30.0], [80.0, 30.0], [50.0, 5.0]], gt_points, [left, right])
    assert s.precision == pytest.approx(2 / 3) and s.recall == 1.0 and s.f1 == pytest.approx(0.8)
    # a matched prediction outside its object's mask is a miss
    s = point_prf([[20.0, 55.0]], gt_points, np.stack([left, right]))
    assert s.hits == 0 and s.f1 == 0.0 and s.recall == 0.0


def test_point_pixel_rules():
    mask = _square(10, 10, 0, 10, 0, 5)  # columns 0..4
    pts = [[4.6, 3.0], [5.0, 3.0], [-0.2, 3.0], [3.0, 10.0], [2.5, 2.5]]
    np.testing.assert_array_equal(point_hits_mask(pts, mask), [True, False, False, False, True])
    # Molmo rounds (half to even): 4.6 -> 5 (outside), -0.2 -> 0 (inside), 2.5 -> 2
    np.testing.assert_array_equal(point_hits_mask(pts, mask, rule="round"), [False, False, True, False, True])
    with pytest.raises(ConfigError):
        point_hits_mask(pts, mask, rule="nearest")


def test_point_prf_bad_input():
    mask = _square(10, 10, 0, 5, 0, 5)
    with pytest.raises(MaskError):
        point_prf([[1, 1]], [[1, 1], [2, 2]], [mask])
    with pytest.raises(MaskError):
        point_prf([[1, 1]], [[1, 1]], mask)  # one (H, W) array is not a list of masks
    with pytest.raises(ValueError):
        point_prf([[1, 1, 1]], [[1, 1]], [mask])
    with pytest.raises(ValueError):
        point_prf([[np.nan, 1]], [[1, 1]], [mask])


def test_counting_metrics():
    assert count_mae([3, 0, 5], [3, 1, 2]) == pytest.approx(4 / 3)
    assert count_accuracy([3, 0, 5], [3, 1, 2]) == pytest.approx(1 / 3)
    assert count_accuracy([3, 0, 5], [3, 1, 2], tolerance=1) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        count_mae([1, 2], [1])
    with pytest.raises(ValueError):
        count_accuracy([], [])


# ---------------------------------------------------------------------------------------------
# whole benchmarks in parallel
# ---------------------------------------------------------------------------------------------


def _fails(item: int) -> int:
    if item == 3:
        raise MaskError(f"item {item}: prediction is the wrong size")
    return item * 2


def test_parallel_map_keeps_order_and_reraises_worker_errors():
    assert parallel_map(abs, range(-20, 0), workers=2, progress=False) == list(range(20, 0, -1))
    assert parallel_map(abs, [], workers=2, progress=False) == []
    with pytest.raises(VideoMolmoError, match="item 3: prediction is the wrong size"):
        parallel_map(_fails, range(8), workers=2, progress=False)
    with pytest.raises(ConfigError):
        parallel_map(abs, [1], workers=0)


def test_public_names():
    for name in metrics.__all__:
        assert hasattr(metrics, name), name
