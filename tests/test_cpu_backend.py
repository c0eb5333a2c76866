"""The weight-free CPU mask backend on real davis16-mini frames."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from videomolmo.errors import ConfigError, VideoMolmoError
from videomolmo.segmentation.cpu import CPU_PRESETS, CpuConfig, CpuPredictor
from videomolmo.segmentation.registry import get_predictor
from conftest import DAVIS  # noqa: E402

DATA = DAVIS


def load(seq: str, idx: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if not (DATA / "JPEGImages" / seq).is_dir():
        pytest.skip("davis16-mini is not available")
    frames, masks = [], []
    for i in idx:
        img = cv2.imread(str(DATA / "JPEGImages" / seq / f"{i:05d}.jpg"))
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        masks.append(cv2.imread(str(DATA / "Annotations" / seq / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE) > 127)
    return frames, masks


def peak(mask: np.ndarray) -> np.ndarray:
    """The point deepest inside the mask (distance-transform peak), as (1, 2) (x, y)."""
    dt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dt), dt.shape)
    return np.array([[x, y]], float)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


@pytest.fixture(scope="module")
def car():
    return load("car-shadow", [20, 21, 22, 23])


@pytest.fixture(scope="module")
def predictor():
    return CpuPredictor()


@pytest.fixture(scope="module")
def small():
    """A coarse predictor for behaviour that does not depend on resolution (cheaper tests)."""
    return CpuPredictor(work_height=120)


def test_predict_image_finds_the_object(predictor, car):
    frames, masks = car
    m = predictor.predict_image(frames[0], peak(masks[0]))
    assert m.dtype == bool and m.shape == masks[0].shape
    # A single click with the colour vote alone: modest, but far above a disk around the point.
    assert iou(m, masks[0]) > 0.4
    disk = np.zeros_like(m)
    cv2.circle(disk.view(np.uint8), tuple(int(v) for v in peak(masks[0])[0]), 20, 1, -1)
    assert iou(m, masks[0]) > iou(disk, masks[0])


def test_video_prompt_and_propagation_keep_the_object(predictor, car):
    frames, masks = car
    state = predictor.init_state(np.stack(frames))
    m0 = predictor.add_points(state, 0, 1, peak(masks[0]))
    assert iou(m0, masks[0]) > 0.5
    out = list(predictor.propagate(state, 0, 3))
    assert [i for i, _ in out] == [0, 1, 2, 3]
    np.testing.assert_array_equal(out[0][1][1], m0)
    for i, objs in out[1:]:
        assert set(objs) == {1}
        # propagation keeps what the prompt found
        assert iou(objs[1], masks[i]) > 0.8 * iou(m0, masks[0])
    # backward from the last frame with its own prompt
    state2 = predictor.init_state(np.stack(frames))
    predictor.add_points(state2, 3, 7, peak(masks[3]))
    back = list(predictor.propagate(state2, 3, 0, reverse=True))
    assert [i for i, _ in back] == [3, 2, 1, 0]
    assert iou(back[-1][1][7], masks[0]) > 0.4


def test_states_are_isolated(small, car):
    predictor = small
    frames, masks = car
    video = np.stack(frames[:2])
    a = predictor.init_state(video)
    b = predictor.init_state(video)
    predictor.add_points(a, 0, 1, peak(masks[0]))
    assert b.prompts == {} and b.masks == {}
    # b has no prompt: propagation yields no objects (nothing leaks from a)
    assert [objs for _, objs in predictor.propagate(b, 0, 1)] == [{}, {}]
    predictor.reset_state(a)
    # Only what describes the (still open) video stays.
    assert a.prompts == {} and a.masks == {} and a.scores == {} and set(a.extra) == {"num_frames", "size"}


def test_negative_points_and_edge_cases(small, car):
    predictor = small
    frames, masks = car
    p = peak(masks[0])
    pos = predictor.predict_image(frames[0], p)
    # a negative click on the positive point's own pixel wins nothing: the positive disk is stamped last
    neg_far = np.array([[5.0, 5.0]])
    both = predictor.predict_image(frames[0], np.concatenate([p, neg_far]), np.array([1, 0]))
    assert not both[5, 5]
    assert iou(both, pos) > 0.5
    # no positive / only out-of-frame points: empty mask, no crash
    assert not predictor.predict_image(frames[0], neg_far, np.array([0])).any()
    with pytest.warns(UserWarning, match="dropped 2 point"):
        assert not predictor.predict_image(frames[0], np.array([[1e6, 3.0], [np.nan, 2.0]])).any()
    assert not predictor.predict_image(frames[0], np.zeros((0, 2))).any()


def test_bad_input(small, car):
    predictor = small
    frames, _ = car
    with pytest.raises(VideoMolmoError, match="RGB uint8"):
        predictor.predict_image(frames[0][..., 0], np.array([[1.0, 1.0]]))
    with pytest.raises(VideoMolmoError, match=r"\(N, 2\)"):
        predictor.predict_image(frames[0], np.array([[1.0, 1.0, 1.0]]))
    with pytest.raises(VideoMolmoError, match="labels"):
        predictor.predict_image(frames[0], np.array([[1.0, 1.0]]), np.array([1, 0]))
    state = predictor.init_state(np.stack(frames[:2]))
    with pytest.raises(VideoMolmoError, match="outside the video"):
        predictor.add_points(state, 5, 1, np.array([[1.0, 1.0]]))
    with pytest.raises(VideoMolmoError, match="reverse"):
        list(predictor.propagate(state, 1, 0))
    with pytest.raises(ConfigError, match="preset"):
        CpuPredictor("turbo")
    with pytest.raises(ConfigError, match="flow_preset"):
        CpuConfig(flow_preset="slow")
    with pytest.raises(VideoMolmoError, match="unknown mask backend"):
        get_predictor("sam9")
    with pytest.raises(VideoMolmoError, match="does not exist"):
        get_predictor("sam2", model_dir="/nonexistent/sam2")


def test_presets_and_registry():
    assert set(CPU_PRESETS) >= {"default", "fast", "still"}
    p = get_predictor("cpu", config="fast", work_height=120)
    assert isinstance(p, CpuPredictor) and p.config.work_height == 120 and p.config.refine == "none"


def test_init_state_opens_a_frame_folder(small, car):
    state = small.init_state(str(DATA / "JPEGImages" / "car-shadow"))
    assert state.extra["num_frames"] == 40
    with pytest.raises(VideoMolmoError, match="no such video"):
        small.init_state(str(DATA / "JPEGImages" / "no-such-sequence"))


def test_motion_vote_needs_the_point_to_move():
    """A still point gets no motion vote, even with a moving object next to it; a moving point
    gets the moving region."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (120, 160), dtype=np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 1.5)
    patch = cv2.GaussianBlur(rng.integers(0, 255, (30, 30), dtype=np.uint8), (0, 0), 1.5)
    greys = []
    for t in range(3):
        g = background.copy()
        g[40:70, 20 + 4 * t : 50 + 4 * t] = patch  # a textured patch moving 4 px per frame
        greys.append(g)
    p = CpuPredictor()
    moving = p._motion_vote([greys[1], greys[0], greys[2]], np.array([[35.0, 55.0]]))
    still = p._motion_vote([greys[1], greys[0], greys[2]], np.array([[120.0, 100.0]]))
    assert moving is not None and moving[55, 35] and moving.sum() > 300
    assert still is not None and not still.any()


def test_motion_vote_is_soft_over_thresholds():
    """The motion voter averages the masks at several fractions of the point's residual: 1 on
    the moving point, values in [0, 1], and a bad threshold list is a config error."""
    rng = np.random.default_rng(1)
    background = cv2.GaussianBlur(rng.integers(0, 255, (120, 160), dtype=np.uint8), (0, 0), 1.5)
    patch = cv2.GaussianBlur(rng.integers(0, 255, (30, 30), dtype=np.uint8), (0, 0), 1.5)
    greys = []
    for t in range(3):
        g = background.copy()
        g[40:70, 20 + 4 * t : 50 + 4 * t] = patch
        greys.append(g)
    p = CpuPredictor(motion_thresholds=(0.3, 0.6, 0.9))
    soft = p._motion_vote([greys[1], greys[0], greys[2]], np.array([[35.0, 55.0]]))
    assert soft is not None and soft.dtype == np.float32
    assert soft[55, 35] == 1.0 and soft.min() >= 0.0 and soft.max() <= 1.0
    # Each threshold's mask is nested in the lower one's, so the soft mask is monotone in it.
    hard = CpuPredictor(motion_thresholds=(0.9,))._motion_vote([greys[1], greys[0], greys[2]], np.array([[35.0, 55.0]]))
    assert (soft[hard > 0] == 1.0).all()
    with pytest.raises(ConfigError, match="motion_thresholds"):
        CpuPredictor(motion_thresholds=())
    with pytest.raises(ConfigError, match="motion_thresholds"):
        CpuPredictor(motion_thresholds=(0.5, -1.0))


def _square_video(n: int, vanish_at: int | None = None) -> list[np.ndarray]:
    """A red square moving right 2 px/frame over grey noise; gone from `vanish_at` on."""
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 140, (96, 128, 1), dtype=np.uint8).repeat(3, axis=2)
    bg = cv2.GaussianBlur(bg, (0, 0), 1.5)
    frames = []
    for i in range(n):
        f = bg.copy()
        if vanish_at is None or i < vanish_at:
            f[30:60, 20 + 2 * i : 50 + 2 * i] = (200, 30, 30)
        frames.append(f)
    return frames


def test_propagation_reports_confidence_and_keeps_memory_flat():
    frames = _square_video(8)
    pred = CpuPredictor(work_height=96)
    st = pred.init_state(frames)
    m0 = pred.add_points(st, 0, 1, [[35, 45]])
    assert iou(m0, frames[0][..., 1] == 30) > 0.9
    anchor_score = pred.object_score(st, 0, 1)
    assert 0.5 <= anchor_score <= 1.0
    held = []
    for fi, objs in pred.propagate(st, 0, 7):
        s = pred.object_score(st, fi, 1)
        assert 0.0 <= s <= anchor_score + 1e-9
        assert iou(objs[1], frames[fi][..., 1] == 30) > 0.8, fi
        held.append(len(st.scores))
    # the prompted frame and the frame yielded last, never more
    assert max(held) <= 2
    assert pred.object_score(st, 3, 1) == 1.0  # no longer held: the documented default


def test_propagation_stops_when_the_object_is_gone():
    frames = _square_video(7, vanish_at=3)
    fresh = {}
    for mode in ("appearance", "warp"):
        pred = CpuPredictor(work_height=96, propagation=mode)
        st = pred.init_state(frames)
        pred.add_points(st, 0, 1, [[35, 45]])
        fresh[mode] = [(objs[1].sum(), pred.object_score(st, fi, 1)) for fi, objs in pred.propagate(st, 0, 6)]
    # the warp drags the square's mask over the background it left; the appearance check drops it
    assert fresh["warp"][-1][0] > 500
    assert fresh["appearance"][-1] == (0, 0.0)
    assert fresh["appearance"][2][0] > 500  # still there before it vanished


def test_bad_propagation_config():
    with pytest.raises(ConfigError, match="propagation"):
        CpuPredictor(propagation="magic")


def test_a_second_click_adds_to_the_first(small, car):
    """The shared click rule: two clicks one at a time give the mask of both clicks at once."""
    frames, masks = car
    video = np.stack(frames[:2])
    p, q = peak(masks[0])[0], np.array([5.0, 5.0])
    a = small.init_state(video)
    small.add_points(a, 0, 1, p[None])
    twice = small.add_points(a, 0, 1, q[None], np.array([0]))
    assert a.prompts[0][1][0].tolist() == [p.tolist(), q.tolist()]
    once = small.add_points(small.init_state(video), 0, 1, np.stack([p, q]), np.array([1, 0]))
    np.testing.assert_array_equal(twice, once)


def _two_colour_video(n: int = 5, h: int = 120, w: int = 200):
    """A textured background panning 2 px/frame, and an object moving 5 px/frame right whose top
    is textured red and whose bottom is textured dark grey, a colour the background also has
    (the car's wheels on the road). Returns frames, object masks and the object's top halves."""
    rng = np.random.default_rng(3)
    big = cv2.GaussianBlur(rng.integers(30, 200, (h, w + 2 * n, 3), dtype=np.uint8), (0, 0), 2.0)
    tex = cv2.GaussianBlur(np.random.default_rng(5).integers(0, 80, (25, 60), dtype=np.uint8), (0, 0), 1.5)
    tex = tex.astype(int)[..., None] - 40
    obj = np.concatenate([np.clip(np.array([200, 40, 40]) + tex, 0, 255), np.clip(60 + 0.6 * tex, 0, 255).repeat(3, axis=2)])
    frames, objects, tops = [], [], []
    for t in range(n):
        f = np.ascontiguousarray(big[:, 2 * t : 2 * t + w])
        x0 = 40 + 5 * t
        f[35:85, x0 : x0 + 60] = obj.astype(np.uint8)
        m = np.zeros((h, w), bool)
        m[35:85, x0 : x0 + 60] = True
        top = np.zeros((h, w), bool)
        top[35:60, x0 : x0 + 60] = True
        frames.append(f)
        objects.append(m)
        tops.append(top)
    return frames, objects, tops


def test_video_prompt_covers_a_part_of_another_colour_that_moves_with_the_object():
    """Clicked on the red top, the single-frame colour vote stops at the colour edge; in the
    video the motion cue (motion voter, colour pass, motion layer) adds the grey bottom that
    moves with it, and nothing of the background."""
    frames, objects, tops = _two_colour_video()
    t, click = 2, np.array([[80.0, 45.0]])
    bottom = objects[t] & ~tops[t]
    p = CpuPredictor()
    single = p.predict_image(frames[t], click)
    assert single[tops[t]].mean() > 0.95 and single[bottom].mean() < 0.1
    video = p.add_points(p.init_state(frames), t, 1, click)
    assert video[tops[t]].mean() > 0.95 and video[bottom].mean() > 0.9
    assert iou(video, objects[t]) > 0.9
    # predict_frame is the same point -> mask without recording a prompt.
    state = p.init_state(frames)
    assert np.array_equal(p.predict_frame(state, t, click), video)
    assert state.prompts == {} and state.masks == {}


def test_motion_layer_scores_what_moves_with_the_mask():
    """The layer score is high where pixels move like the mask (its other-coloured bottom), low
    on the panning background; a still click next to the moving object gets a mask that leaves
    the object out (the layer pass is skipped when the click does not move like the model)."""
    frames, objects, tops = _two_colour_video()
    t = 2
    p = CpuPredictor()
    grey = p._grey(frames[t])
    fields = [p._camera_motion(grey, p._grey(frames[j])) for j in (t - 1, t + 1)]
    layer = p._layer_score(tops[t], fields)
    assert layer.min() >= 0 and layer.max() <= 1
    assert layer[objects[t] & ~tops[t]].mean() > 0.8
    assert layer[~objects[t]].mean() < 0.2
    still = p.add_points(p.init_state(frames), t, 1, np.array([[170.0, 100.0]]))
    assert not (still & objects[t]).any()


def test_anchor_pass_configs_are_checked():
    with pytest.raises(ConfigError, match="anchor_colour_weight"):
        CpuPredictor(anchor_colour_weight=1.5)
    with pytest.raises(ConfigError, match="layer_weight"):
        CpuPredictor(layer_weight=-0.1)
    with pytest.raises(ConfigError, match="anchor_colour_bins"):
        CpuPredictor(anchor_colour_bins=1)
    with pytest.raises(ConfigError, match="anchor_ring_width"):
        CpuPredictor(anchor_ring_width=0)


def test_propagation_past_the_frame_edge_ends_empty_without_warnings():
    """The camera pans right past a square on the left edge: once the flow carries the whole
    mask out of the frame the side is lost (empty, score 0), with no statistics computed over
    an empty mask on the way (they used to warn and compare NaN)."""
    import warnings

    rng = np.random.default_rng(1)
    world = cv2.GaussianBlur(rng.integers(40, 200, (96, 200, 1), dtype=np.uint8).repeat(3, axis=2), (0, 0), 1.0)
    world[40:56, 4:20] = (200, 30, 30)
    frames = [np.ascontiguousarray(world[:, 6 * i: 6 * i + 128]) for i in range(8)]
    pred = CpuPredictor(work_height=96)
    st = pred.init_state(frames)
    pred.add_points(st, 0, 1, [[12, 48]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        last = [(objs[1].sum(), pred.object_score(st, fi, 1)) for fi, objs in pred.propagate(st, 0, 7)][-1]
    assert last == (0, 0.0)


def test_size_boxes_revote_small_objects_with_boxes_sized_from_the_first_vote(monkeypatch):
    """With `size_boxes` the boxes are voted a second time at f x R (R the first vote's equivalent
    radius), and only when R is under the gate."""
    img = np.full((120, 160, 3), 40, np.uint8)
    cv2.circle(img, (80, 60), 8, (230, 200, 30), -1)
    point = np.array([[80.0, 60.0]])
    seen: list[list[float] | None] = []
    for gate, revotes in ((0.3, True), (0.01, False)):
        p = CpuPredictor(work_height=120, motion_weight=0.0, size_boxes=(1.0, 2.0), size_gate=gate)
        real = p._colour_votes
        seen.clear()

        def spy(img, pos, neg, halves=None, real=real):
            seen.append(halves)
            return real(img, pos, neg, halves)

        monkeypatch.setattr(p, "_colour_votes", spy)
        m = p.predict_image(img, point)
        radius = np.sqrt(m.sum() / np.pi)
        assert iou(m, cv2.circle(np.zeros((120, 160), np.uint8), (80, 60), 8, 1, -1) > 0) > 0.8
        assert len(seen) == (2 if revotes else 1) and seen[0] is None
        if revotes:
            assert seen[1] == pytest.approx([max(4.0, radius), max(4.0, 2 * radius)], rel=0.15)
    with pytest.raises(ConfigError, match="size_boxes"):
        CpuPredictor(size_boxes=(0.0,))
    with pytest.raises(ConfigError, match="size_gate"):
        CpuPredictor(size_gate=3.0)


def test_colour_separation_measures_the_anchor_colour_model_and_scales_its_trust():
    frames = _square_video(5)
    pred = CpuPredictor(work_height=96)
    small = pred._small(frames[0])[0]
    square = small[..., 1] == 30
    _, inside, sep = pred._appearance(small, square)
    assert sep > 0.8 and inside > 0.9  # red on grey: colour tells them apart
    grey = np.zeros_like(square)
    grey[10:40, 60:90] = True  # a patch of the background: the ring has the same colours
    assert abs(pred._appearance(small, grey)[2]) < 0.15

    def walk(p, separation=None):
        st = p.init_state(frames)
        p.add_points(st, 0, 1, [[35, 45]])
        if separation is not None:
            lut, inside, _ = st.extra["appearance"][1]
            st.extra["appearance"][1] = (lut, inside, separation)
        return [objs[1] for _, objs in p.propagate(st, 0, 4)]

    # A colour model with no separation gets no say: the walk is the warp's alone.
    untrusted = walk(CpuPredictor(work_height=96, colour_trust_separation=0.3), separation=0.0)
    warp_only = walk(CpuPredictor(work_height=96, warp_weight=1.0, occluded_warp_weight=1.0))
    assert all((a == b).all() for a, b in zip(untrusted, warp_only))
    # At or above s0 the option changes nothing.
    trusted = walk(CpuPredictor(work_height=96, colour_trust_separation=0.3))
    default = walk(CpuPredictor(work_height=96))
    assert all((a == b).all() for a, b in zip(trusted, default))
    assert any((a != b).any() for a, b in zip(default, warp_only))  # the colour model does act here
    with pytest.raises(ConfigError, match="colour_trust_separation"):
        CpuPredictor(colour_trust_separation=1.5)
