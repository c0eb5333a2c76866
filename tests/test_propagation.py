"""The anchor-wise bidirectional runner (videomolmo.segmentation.propagation) with a fake backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from videomolmo.errors import ConfigError, VideoMolmoError
from videomolmo.fusion import fuse
from videomolmo.segmentation.predictor import MaskPredictor, PredictorState
from videomolmo.segmentation.propagation import iter_segments, segment_video
from conftest import DAVIS  # noqa: E402

H, W = 20, 40


class FakePredictor(MaskPredictor):
    """A 3x3 square at each positive point; propagation moves every mask one column per frame
    in the walk direction, so forward and backward candidates differ in a known way."""

    name = "fake"

    def __init__(self):
        self.states: list[PredictorState] = []
        self.walks: list[tuple[int, int, bool]] = []

    def init_state(self, video):
        self.states.append(super().init_state(video))
        return self.states[-1]

    def _square(self, points):
        m = np.zeros((H, W), bool)
        for x, y in np.asarray(points).reshape(-1, 2):
            m[max(0, int(y) - 1) : int(y) + 2, max(0, int(x) - 1) : int(x) + 2] = True
        return m

    def _mask_from_prompt(self, state, frame_idx, obj_id, points, labels):
        return self._square(points[labels == 1]), 1.0

    def _start_walk(self, state, start_frame, reverse):
        # isolation: a state used by the runner only ever holds its own anchor's prompts
        assert len(state.prompts) == 1 and start_frame in state.prompts
        state.extra["walk"] = (start_frame, reverse)

    def propagate(self, state, start_frame, end_frame, reverse=False):
        self.walks.append((start_frame, end_frame, reverse))
        return super().propagate(state, start_frame, end_frame, reverse)

    def _track_step(self, state, frame_idx, reverse):
        start, _ = state.extra["walk"]
        i = abs(frame_idx - start)
        # A backend that doubts its masks more with every frame from the anchor.
        return {oid: (np.roll(m, -i if reverse else i, axis=1), 1.0 / (1 + i))
                for oid, m in state.masks[start].items()}

    def predict_image(self, frame, points, labels=None):
        return self._square(points)


def frames(n):
    return np.zeros((n, H, W, 3), np.uint8)


def run(n, points, k, **kw):
    pred = FakePredictor()
    kw = {"tau": 0.7, "strategy": "bidirectional", **kw}
    out = list(segment_video(frames(n), points, pred, k=k, **kw))
    return out, pred


def test_frame_order_and_count():
    for n, k in [(11, 5), (10, 5), (3, 1), (7, 3), (4, 10), (1, 1), (5, 5)]:
        out, _ = run(n, {0: [[5, 5]]}, k)
        assert [i for i, _ in out] == list(range(n)), (n, k)
        assert all(m.dtype == bool and m.shape == (H, W) for _, m in out)


def test_forward_and_backward_candidates_are_fused():
    # anchor 0 at x=5, anchor 4 at x=13: forward squares move right, backward squares move left
    pts = {0: [[5, 10]], 4: [[13, 10]]}
    pred = FakePredictor()
    segs = list(iter_segments(frames(5), pts, pred, k=4))
    assert len(segs) == 2 and segs[1].is_tail and not segs[0].is_tail
    s = segs[0]
    assert len(s.forward) == 3 and len(s.backward) == 3
    for j in range(3):
        t = 1 + j
        np.testing.assert_array_equal(s.forward[j], np.roll(pred._square([[5, 10]]), t, axis=1))
        np.testing.assert_array_equal(s.backward[j], np.roll(pred._square([[13, 10]]), -(4 - t), axis=1))
    out = dict(segment_video(frames(5), pts, FakePredictor(), k=4, tau=0.7, strategy="bidirectional"))
    for j in range(3):
        np.testing.assert_array_equal(out[1 + j], fuse(s.forward[j], s.backward[j], 0.7))
    # frames 2: forward at x=7, backward at x=11 -> disjoint -> union of two squares
    assert out[2].sum() == 18
    # anchor frames carry the anchor masks
    np.testing.assert_array_equal(out[4], pred._square([[13, 10]]))


def test_each_anchor_gets_its_own_state():
    _, pred = run(11, {0: [[5, 5]], 5: [[9, 5]], 10: [[20, 5]]}, 5)
    assert len(pred.states) == 3
    for st in pred.states:
        # reset after use: nothing retained across segments
        assert st.prompts == {} and st.masks == {}
    # anchor 5's state walks backward to frame 1 and forward to frame 9
    assert (5, 1, True) in pred.walks and (5, 9, False) in pred.walks
    assert (0, 4, False) in pred.walks and (10, 6, True) in pred.walks


def test_tail_is_forward_only():
    out, pred = run(8, {0: [[5, 5]], 5: [[5, 5]]}, 5)
    assert (5, 7, False) in pred.walks
    assert not any(w[2] and w[0] == 7 for w in pred.walks)
    tail = dict(out)
    np.testing.assert_array_equal(tail[7], np.roll(pred._square([[5, 5]]), 2, axis=1))


def test_k1_uses_every_frame_and_never_propagates():
    pts = {i: [[3 + i, 5]] for i in range(4)}
    out, pred = run(4, pts, 1)
    for i, m in out:
        np.testing.assert_array_equal(m, FakePredictor()._square([[3 + i, 5]]))
    assert all(s == e for s, e, _ in pred.walks) or pred.walks == []


def test_k_larger_than_video_is_one_forward_pass():
    out, pred = run(6, {0: [[5, 5]]}, 50)
    assert len(pred.states) == 1
    assert pred.walks == [(0, 5, False)]
    np.testing.assert_array_equal(out[5][1], np.roll(FakePredictor()._square([[5, 5]]), 5, axis=1))


def test_anchor_without_points_is_an_empty_side():
    # anchor 3 has no points: frames 1-2 take the forward side, frame 3 is empty, 4-5 empty too
    out = dict(run(6, {0: [[5, 5]]}, 3)[0])
    sq = FakePredictor()._square([[5, 5]])
    np.testing.assert_array_equal(out[1], np.roll(sq, 1, axis=1))
    np.testing.assert_array_equal(out[2], np.roll(sq, 2, axis=1))
    assert not out[3].any() and not out[4].any() and not out[5].any()
    # no points at all: every frame empty, nothing crashes
    out = run(6, {}, 3)[0]
    assert len(out) == 6 and not any(m.any() for _, m in out)
    # an explicitly empty list and a list of only invalid points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run(6, {0: [], 3: [[float("nan"), 1.0]]}, 3)[0]
    assert not any(m.any() for _, m in out)
    # first anchor empty, second not: the backward side fills the gap
    out = dict(run(4, {3: [[10, 5]]}, 3)[0])
    assert not out[0].any()
    np.testing.assert_array_equal(out[1], np.roll(FakePredictor()._square([[10, 5]]), -2, axis=1))


def test_several_points_are_separate_objects_unioned():
    pred = FakePredictor()
    out = dict(segment_video(frames(3), {0: [[5, 5], [30, 15]]}, pred, k=5, tau=0.7, strategy="bidirectional"))
    assert set(pred.states[0].prompts.get(0, {1: 0, 2: 0})) == {1, 2} or pred.states[0].prompts == {}
    assert out[0].sum() == 18
    assert out[2].sum() == 18


def test_negative_points_go_to_every_object():
    pred = FakePredictor()
    seen = []
    orig = pred.add_points

    def spy(state, frame_idx, obj_id, points, labels=None):
        seen.append((obj_id, np.asarray(points).tolist(), np.asarray(labels).tolist()))
        return orig(state, frame_idx, obj_id, points, labels)

    pred.add_points = spy
    pts = np.array([[5, 5], [30, 15], [20, 10]], float)
    list(segment_video(frames(2), {0: (pts, np.array([1, 1, 0]))}, pred, k=5, tau=0.7, strategy="bidirectional"))
    assert seen == [(1, [[5, 5], [20, 10]], [1, 0]), (2, [[30, 15], [20, 10]], [1, 0])]


def test_forward_strategy_skips_backward_propagation():
    out, pred = run(11, {0: [[5, 5]], 5: [[5, 5]], 10: [[5, 5]]}, 5, strategy="forward")
    assert not any(rev for _, _, rev in pred.walks)
    assert len(out) == 11


def test_non_anchor_points_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="non-anchor"):
        out, _ = run(6, {0: [[5, 5]], 2: [[30, 5]]}, 5)
    assert not out[2][1][:, 25:].any()


def test_bad_points_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match="dropped 2 point"):
        out, _ = run(3, {0: [[5, 5], [-1, 3], [float("nan"), 2]]}, 5)
    assert out[0][1].sum() == 9


def test_bad_input():
    with pytest.raises(VideoMolmoError, match="frame index 9 is beyond the video"):
        run(5, {9: [[1, 1]]}, 2)
    with pytest.raises(VideoMolmoError, match="not an integer"):
        run(5, {"x": [[1, 1]]}, 2)
    for k in (0, -3, 1.5):
        with pytest.raises(ConfigError, match="k must be"):
            run(5, {}, k)
    for tau in (-0.1, 1.01):
        with pytest.raises(ConfigError, match="tau"):
            run(5, {}, 2, tau=tau)
    with pytest.raises(ConfigError, match="unknown fusion strategy"):
        run(5, {}, 2, strategy="mean")
    with pytest.raises(VideoMolmoError, match="points must be"):
        run(5, {0: [[1, 2, 3]]}, 2)


def test_streaming_holds_one_segment():
    """The runner pulls frames lazily: when frame t is yielded no anchor beyond the next is open."""
    pred = FakePredictor()
    gen = segment_video(frames(40), {i: [[5, 5]] for i in range(0, 40, 5)}, pred, k=5, tau=0.7, strategy="bidirectional")
    for t, _ in gen:
        assert len(pred.states) <= t // 5 + 2


# ----------------------------------------------------------------------------- CLI: videomolmo segment

import json  # noqa: E402

import cv2  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from videomolmo.cli import app  # noqa: E402

DATA = DAVIS


@pytest.fixture(scope="module")
def short_video(tmp_path_factory):
    """Frames 20-26 of car-shadow at quarter size (fast), plus their ground-truth masks."""
    src = DATA / "JPEGImages" / "car-shadow"
    if not src.is_dir():
        pytest.skip("davis16-mini is not available")
    root = tmp_path_factory.mktemp("car")
    gts = []
    for i in range(20, 27):
        img = cv2.resize(cv2.imread(str(src / f"{i:05d}.jpg")), (214, 120), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        gt = cv2.imread(str(DATA / "Annotations" / "car-shadow" / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)
        gts.append(cv2.resize(gt, (214, 120), interpolation=cv2.INTER_NEAREST) > 127)
    return root, gts


def _peak(mask):
    from scipy import ndimage as ndi

    dt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dt), dt.shape)
    return [float(x), float(y)]


def invoke(*args):
    return CliRunner().invoke(app, ["segment", *map(str, args)])


def test_cli_segment_writes_one_png_per_frame(short_video, tmp_path):
    frames, gts = short_video
    pts = tmp_path / "points.json"
    # frame 3 is not an anchor for k=5 (ignored, warned); 99, 99 is outside the 214x120 frame
    pts.write_text(json.dumps({"0": [_peak(gts[0]), [999.0, 99.0]], "5": [_peak(gts[5])], "3": [[1, 1]]}))
    out = tmp_path / "masks"
    res = invoke(frames, "--points", pts, "--out", out, "--k", 5)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"{i:05d}.png" for i in range(20, 27)]
    ious = []
    for name, gt in zip(names, gts):
        m = cv2.imread(str(out / name), cv2.IMREAD_GRAYSCALE)
        assert m.shape == gt.shape and set(np.unique(m)) <= {0, 255}
        ious.append(((m > 0) & gt).sum() / max(1, ((m > 0) | gt).sum()))
    assert np.mean(ious) > 0.4, ious
    assert "7 masks written" in res.output

    # the JSONL form gives the same masks
    jl = tmp_path / "points.jsonl"
    jl.write_text(
        json.dumps({"frame": 0, "points": [_peak(gts[0])]}) + "\n"
        + json.dumps({"frame": 5, "points": [_peak(gts[5])]}) + "\n"
    )
    out2 = tmp_path / "masks2"
    res = invoke(frames, "--points", jl, "--out", out2, "--k", 5, "--fusion", "forward")
    assert res.exit_code == 0, res.output
    assert len(list(out2.glob("*.png"))) == 7

    # resume: a rerun keeps what is written; a lost mask re-runs only its anchor segment
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    res = invoke(frames, "--points", pts, "--out", out, "--k", 5)
    assert res.exit_code == 0 and "0 masks written, 7 kept" in res.output, res.output
    (out / "00022.png").unlink()
    res = invoke(frames, "--points", pts, "--out", out, "--k", 5)
    assert res.exit_code == 0 and "5 masks written, 2 kept" in res.output, res.output
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    # other settings into the same folder are refused, not mixed
    res = invoke(frames, "--points", pts, "--out", out, "--k", 3)
    assert res.exit_code == 2 and "other settings" in res.output


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("{not json", [], "not valid JSON"),
        ("[1, 2]", [], "expected a JSON object"),
        ('{"zero": [[1, 2]]}', [], "not an integer"),
        ('{"0": [[1, 2, 3]]}', [], "two numbers (x, y)"),
        ('{"0": 5}', [], "list of (x, y)"),
        ('{"0": [[1, 2]]}\n{"frame": 1}', [], "each line must be an object"),
        ('{"40": [[1, 2]]}', [], "frame index 40 is beyond the video"),
        ('{"0": [[1, 2]]}', ["--k", "0"], "k must be a positive"),
        ('{"0": [[1, 2]]}', ["--tau", "1.5"], "tau must be in [0, 1]"),
        ('{"0": [[1, 2]]}', ["--fusion", "avg"], "unknown fusion strategy"),
        ('{"0": [[1, 2]]}', ["--mask-backend", "nope"], "unknown mask backend 'nope'"),
        ('{"0": [[1, 2]]}', ["--mask-backend", "sam2"], "--mask-checkpoint"),
        ('{"0": [[1, 2]]}', ["--mask-backend", "sam2", "--mask-checkpoint", "/nonexistent/sam2"], "does not exist"),
    ],
)
def test_cli_segment_bad_input(short_video, tmp_path, content, extra, message):
    frames, _ = short_video
    pts = tmp_path / "p.json"
    pts.write_text(content)
    res = invoke(frames, "--points", pts, "--out", tmp_path / "o", *extra)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_cli_segment_missing_inputs(short_video, tmp_path):
    frames, _ = short_video
    res = invoke(frames, "--points", tmp_path / "none.json", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "does not exist" in res.output
    pts = tmp_path / "p.json"
    pts.write_text('{"0": [[1, 2]]}')
    res = invoke(tmp_path / "no_video", "--points", pts, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "no_video" in res.output
    empty = tmp_path / "sam2-empty"
    empty.mkdir()
    res = invoke(frames, "--points", pts, "--out", tmp_path / "o", "--mask-backend", "sam2", "--mask-checkpoint", empty)
    assert res.exit_code == 2 and "no config.json" in res.output


def test_each_frame_is_read_about_once():
    """The runner caches a segment's frames: a reverse walk does not re-read (or seek) them."""

    class CountingFrames:
        def __init__(self, n):
            self.n, self.reads = n, []

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            self.reads.append(i)
            return np.zeros((H, W, 3), np.uint8)

    class ReadingPredictor(FakePredictor):
        def propagate(self, state, start_frame, end_frame, reverse=False):
            for fi, objs in super().propagate(state, start_frame, end_frame, reverse):
                state.video[fi]
                yield fi, objs

    video = CountingFrames(23)
    list(segment_video(video, {i: [[5, 5]] for i in range(0, 23, 5)}, ReadingPredictor(), k=5, tau=0.7, strategy="bidirectional"))
    assert sorted(set(video.reads)) == list(range(23))
    assert len(video.reads) <= 23 + 1


def test_skipped_segments_are_not_computed():
    pts = {0: [[5, 5]], 5: [[9, 5]], 10: [[20, 5]]}
    full = dict(run(13, pts, 5)[0])
    pred = FakePredictor()
    part = dict(segment_video(frames(13), pts, pred, k=5, skip=lambda a, e: a == 5, tau=0.7, strategy="bidirectional"))
    assert sorted(part) == [0, 1, 2, 3, 4, 10, 11, 12]
    for t, m in part.items():
        np.testing.assert_array_equal(m, full[t])
    # anchors 0 and 5 for the first segment, 10 for the tail: nothing walks segment 5..9
    assert not any(s == 5 and not rev for s, _, rev in pred.walks)
    assert not any(s == 10 and rev for s, _, rev in pred.walks)


def test_runner_opens_paths(short_video):
    frames, gts = short_video
    pred = FakePredictor()
    global H, W
    old = H, W
    H, W = 120, 214
    try:
        out = list(segment_video(str(frames), {0: [[10, 10]]}, pred, k=5, tau=0.7, strategy="bidirectional"))
        out2 = list(segment_video(frames, {0: [[10, 10]]}, FakePredictor(), k=5, tau=0.7, strategy="bidirectional"))
    finally:
        H, W = old
    assert len(out) == len(out2) == 7


def test_runner_drives_the_sam2_backend(tmp_path):
    """The runner's protocol (one state per anchor, a backward then a forward walk on it, empty
    anchors) works with the sam2 backend too (tiny random weights: only the protocol is checked)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import Sam2VideoModel

    from videomolmo.segmentation.registry import get_predictor
    from videomolmo.segmentation.sam2 import tiny_sam2_config

    torch.manual_seed(0)
    Sam2VideoModel(tiny_sam2_config(128)).eval().save_pretrained(tmp_path / "tiny")
    pred = get_predictor("sam2", model_dir=tmp_path / "tiny")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 60, (12, 48, 64, 3), dtype=np.uint8)
    for t in range(12):
        video[t, 10:30, 8 + 2 * t : 28 + 2 * t] = 230
    out = list(segment_video(video, {0: [[18, 20], [50, 40]], 5: [[28, 20]], 10: []}, pred, k=5, tau=0.7, strategy="bidirectional"))
    assert [i for i, _ in out] == list(range(12))
    assert all(m.dtype == bool and m.shape == (48, 64) for _, m in out)
    assert not out[10][1].any() and not out[11][1].any()  # empty last anchor and its tail


def test_segments_carry_the_backends_confidence():
    pts = {0: [[5, 10]], 4: [[13, 10]]}
    seg = next(iter_segments(frames(5), pts, FakePredictor(), k=4))
    assert seg.forward_scores == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    assert seg.backward_scores == pytest.approx([1 / 4, 1 / 3, 1 / 2])
    # The confidence strategy sees them. Frame 1: forward weight (1/2) / 1 against backward
    # (1/4) / 3, below 0.2x: the forward side alone; frame 2: equal weights, the union.
    out = dict(segment_video(frames(5), pts, FakePredictor(), k=4, tau=0.7, strategy="confidence"))
    np.testing.assert_array_equal(out[1], seg.forward[0])
    np.testing.assert_array_equal(out[3], seg.backward[2])
    np.testing.assert_array_equal(out[2], seg.forward[1] | seg.backward[1])


def test_default_object_score_is_one():
    pred = FakePredictor()
    st = pred.init_state(frames(2))
    assert pred.object_score(st, 0, 1) == 1.0


def test_backends_without_object_score_fuse_as_certain():
    class Bare:  # a duck-typed backend: the MaskPredictor methods but not object_score
        name = "bare"

        def __init__(self):
            self.inner = FakePredictor()

        def __getattr__(self, name):
            if name == "object_score":
                raise AttributeError(name)
            return getattr(self.inner, name)

    seg = next(iter_segments(frames(5), {0: [[5, 10]], 4: [[13, 10]]}, Bare(), k=4))
    assert seg.forward_scores == [1.0, 1.0, 1.0] and seg.backward_scores == [1.0, 1.0, 1.0]


def test_per_frame_confidence_is_the_mean_of_the_sides_that_saw_the_frame():
    got = {}
    out = list(segment_video(frames(11), {0: [[5, 5]], 5: [[9, 5]], 10: [[20, 5]]}, FakePredictor(), k=5,
                             tau=0.7, strategy="bidirectional", on_score=got.__setitem__))
    assert sorted(got) == [i for i, _ in out] == list(range(11))
    assert got[0] == got[5] == got[10] == 1.0  # prompted anchors: the backend's prompt score
    for t in (1, 2, 3, 4):
        # forward from 0 is t frames away, backward from 5 is 5 - t: FakePredictor's 1 / (1 + d)
        assert got[t] == pytest.approx((1 / (1 + t) + 1 / (1 + 5 - t)) / 2)


def test_forward_only_confidence_uses_the_forward_side_alone():
    got = {}
    list(segment_video(frames(6), {0: [[5, 5]], 5: [[9, 5]]}, FakePredictor(), k=5, tau=0.7, strategy="forward",
                       on_score=got.__setitem__))
    assert got[2] == pytest.approx(1 / 3)
