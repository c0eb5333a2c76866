"""The `sam2` backend, run for real on CPU through a tiny random-initialised Sam2VideoModel.

Random weights give meaningless masks, so these tests check the plumbing: loading and its errors,
shapes/dtypes, which frames are visited in which order, object ids, determinism, that prompts
change outputs, state isolation, reset, and that per-frame storage stays bounded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DAVIS, needs_davis  # noqa: E402

torch = pytest.importorskip("torch")

from videomolmo.errors import CheckpointError, VideoMolmoError  # noqa: E402
from videomolmo.segmentation.sam2 import (  # noqa: E402
    Sam2Predictor,
    stored_frame_counts,
    tiny_sam2_config,
    validate_checkpoint_dir,
)

H, W = 48, 64


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    from transformers import Sam2VideoModel

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Sam2VideoModel(tiny_sam2_config(128)).eval()
    out = tmp_path_factory.mktemp("sam2") / "tiny"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def predictor(ckpt_dir) -> Sam2Predictor:
    return Sam2Predictor.from_pretrained(ckpt_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    # A moving bright square on noise: something for the image encoder to respond to.
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (12, H, W, 3), dtype=np.uint8)
    for t in range(len(frames)):
        frames[t, 10:30, 8 + 2 * t : 28 + 2 * t] = 230
    return frames


def _copy(ckpt_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(ckpt_dir, dst)
    return dst


# ----------------------------------------------------------------------------- loading


def test_loader_errors_name_the_directory_and_problem(ckpt_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Sam2Predictor.from_pretrained(tmp_path / "nope")

    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="must be a directory"):
        Sam2Predictor.from_pretrained(tmp_path / "file")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        Sam2Predictor.from_pretrained(empty)

    bad_json = _copy(ckpt_dir, tmp_path / "a")
    (bad_json / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Sam2Predictor.from_pretrained(bad_json)

    other = _copy(ckpt_dir, tmp_path / "b")
    cfg = json.loads((other / "config.json").read_text())
    cfg["model_type"] = "llama"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type"):
        Sam2Predictor.from_pretrained(other)

    no_weights = _copy(ckpt_dir, tmp_path / "c")
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        Sam2Predictor.from_pretrained(no_weights)

    truncated = _copy(ckpt_dir, tmp_path / "d")
    weights = next(truncated.glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as exc:
        Sam2Predictor.from_pretrained(truncated)
    assert str(weights) in str(exc.value)

    shards = _copy(ckpt_dir, tmp_path / "e")
    (shards / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}})
    )
    with pytest.raises(CheckpointError, match="missing weight files"):
        validate_checkpoint_dir(shards)


def test_loader_rejects_weights_that_do_not_match_the_config(ckpt_dir, tmp_path):
    wrong = _copy(ckpt_dir, tmp_path)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["mask_decoder_config"]["mlp_dim"] = 64  # every decoder MLP tensor changes shape
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=str(wrong)):
        Sam2Predictor.from_pretrained(wrong)


def test_checkpoint_error_is_a_videomolmo_error():
    assert issubclass(CheckpointError, VideoMolmoError)


# ----------------------------------------------------------------------------- single image


def test_predict_image_shape_determinism_and_prompt_sensitivity(predictor, video):
    frame = video[0]
    a = predictor.predict_image(frame, np.array([[15.0, 20.0]]))
    assert a.shape == (H, W) and a.dtype == bool
    again = predictor.predict_image(frame, np.array([[15.0, 20.0]]))
    np.testing.assert_array_equal(a, again)
    # Another frame in between evicts the feature cache; the answer must not depend on it.
    predictor.predict_image(video[5], np.array([[15.0, 20.0]]))
    np.testing.assert_array_equal(a, predictor.predict_image(frame, np.array([[15.0, 20.0]])))
    outputs = {
        predictor.predict_image(frame, np.array(p, dtype=float), np.array(l)).tobytes()
        for p, l in [([[15, 20]], [1]), ([[60, 45]], [1]), ([[15, 20], [60, 45]], [1, 0]), ([[40, 5]], [1])]
    }
    assert len(outputs) > 1, "masks do not depend on the prompt"


def test_bad_points_are_dropped_with_a_warning(predictor, video):
    with pytest.warns(UserWarning, match="outside"):
        m = predictor.predict_image(video[0], np.array([[15.0, 20.0], [np.nan, 3.0], [500.0, 10.0]]))
    np.testing.assert_array_equal(m, predictor.predict_image(video[0], np.array([[15.0, 20.0]])))
    with pytest.warns(UserWarning):
        empty = predictor.predict_image(video[0], np.array([[-5.0, 1.0]]))
    assert empty.shape == (H, W) and not empty.any()
    with pytest.raises(VideoMolmoError, match="labels"):
        predictor.predict_image(video[0], np.array([[1.0, 1.0]]), np.array([1, 0]))
    with pytest.raises(VideoMolmoError, match="RGB uint8"):
        predictor.predict_image(video[0].astype(np.float32), np.array([[1.0, 1.0]]))


# ----------------------------------------------------------------------------- video


def _run(predictor, video, prompts, start, end, reverse=False):
    state = predictor.init_state(video)
    for frame_idx, obj_id, pts in prompts:
        predictor.add_points(state, frame_idx, obj_id, np.array(pts, dtype=float))
    return state, list(predictor.propagate(state, start, end, reverse=reverse))


def test_forward_reverse_and_frame_ranges_visit_the_right_frames(predictor, video):
    state = predictor.init_state(video)
    first = predictor.add_points(state, 4, 1, np.array([[20.0, 20.0]]))
    assert first.shape == (H, W) and first.dtype == bool
    assert list(state.prompts) == [4] and list(state.prompts[4]) == [1]

    fwd = list(predictor.propagate(state, 4, 9))
    assert [f for f, _ in fwd] == [4, 5, 6, 7, 8, 9]
    np.testing.assert_array_equal(fwd[0][1][1], first)  # the prompted frame comes first, as prompted
    for _, masks in fwd:
        assert list(masks) == [1] and masks[1].shape == (H, W) and masks[1].dtype == bool

    back = list(predictor.propagate(state, 4, 1, reverse=True))
    assert [f for f, _ in back] == [4, 3, 2, 1]
    np.testing.assert_array_equal(back[0][1][1], first)

    assert [f for f, _ in predictor.propagate(state, 7, 7)] == [7]
    assert [f for f, _ in predictor.propagate(state, 0, 0, reverse=True)] == [0]
    with pytest.raises(VideoMolmoError, match="outside the video"):
        list(predictor.propagate(state, 4, len(video)))
    with pytest.raises(VideoMolmoError, match="cannot propagate forward"):
        list(predictor.propagate(state, 6, 2))
    with pytest.raises(VideoMolmoError, match="cannot propagate backward"):
        list(predictor.propagate(state, 2, 6, reverse=True))
    with pytest.raises(VideoMolmoError, match="outside the video"):
        predictor.add_points(state, -1, 1, np.array([[1.0, 1.0]]))


def test_propagation_is_deterministic_and_depends_on_the_prompt(predictor, video):
    _, a = _run(predictor, video, [(2, 1, [[20, 20]])], 2, 8)
    _, b = _run(predictor, video, [(2, 1, [[20, 20]])], 2, 8)
    _, c = _run(predictor, video, [(2, 1, [[55, 40]])], 2, 8)
    for (fa, ma), (fb, mb) in zip(a, b):
        assert fa == fb
        np.testing.assert_array_equal(ma[1], mb[1])
    assert any(not np.array_equal(ma[1], mc[1]) for (_, ma), (_, mc) in zip(a, c))


def test_states_are_isolated(predictor, video):
    _, alone = _run(predictor, video, [(3, 1, [[20, 20]])], 3, 9)
    s1 = predictor.init_state(video)
    s2 = predictor.init_state(video)
    predictor.add_points(s1, 3, 1, np.array([[20.0, 20.0]]))
    predictor.add_points(s2, 9, 1, np.array([[55.0, 40.0]]))
    list(predictor.propagate(s2, 9, 3, reverse=True))  # interleave work on another state
    mixed = list(predictor.propagate(s1, 3, 9))
    assert s2.prompts.keys() == {9} and s1.prompts.keys() == {3}
    for (fa, ma), (fb, mb) in zip(alone, mixed):
        assert fa == fb
        np.testing.assert_array_equal(ma[1], mb[1])


def test_reset_forgets_everything(predictor, video):
    state, before = _run(predictor, video, [(0, 1, [[20, 20]])], 0, 5)
    predictor.reset_state(state)
    assert not state.prompts and not state.masks
    assert list(predictor.propagate(state, 0, 2)) == [(0, {}), (1, {}), (2, {})]
    predictor.add_points(state, 0, 1, np.array([[20.0, 20.0]]))
    after = list(predictor.propagate(state, 0, 5))
    for (_, ma), (_, mb) in zip(before, after):
        np.testing.assert_array_equal(ma[1], mb[1])


def test_multi_object_ids_and_masks(predictor, video):
    state = predictor.init_state(video)
    predictor.add_points(state, 2, 7, np.array([[20.0, 20.0]]))
    predictor.add_points(state, 2, 3, np.array([[55.0, 40.0], [20.0, 20.0]]), np.array([1, 0]))
    out = list(predictor.propagate(state, 2, 6))
    assert all(set(m) == {7, 3} for _, m in out)
    assert any(not np.array_equal(m[7], m[3]) for _, m in out)
    # Each object alone gives the same masks as in company: objects do not share memory.
    _, alone = _run(predictor, video, [(2, 7, [[20, 20]])], 2, 6)
    for (_, m), (_, a) in zip(out, alone):
        np.testing.assert_array_equal(m[7], a[7])


def test_object_prompted_on_a_later_frame(predictor, video):
    state = predictor.init_state(video)
    predictor.add_points(state, 1, 1, np.array([[20.0, 20.0]]))
    predictor.add_points(state, 5, 2, np.array([[55.0, 40.0]]))
    out = dict(predictor.propagate(state, 1, 8))
    assert set(out[8]) == {1, 2}


def test_unusable_prompt_leaves_an_empty_side_not_a_crash(predictor, video):
    state = predictor.init_state(video)
    with pytest.warns(UserWarning):
        m = predictor.add_points(state, 3, 1, np.array([[np.nan, np.nan]]))
    assert not m.any()
    assert [masks for _, masks in predictor.propagate(state, 3, 5)] == [{}, {}, {}]


def test_reprompting_a_tracked_frame_makes_it_a_conditioning_frame(predictor, video):
    state = predictor.init_state(video)
    predictor.add_points(state, 0, 1, np.array([[20.0, 20.0]]))
    list(predictor.propagate(state, 0, 6))
    predictor.add_points(state, 6, 1, np.array([[30.0, 20.0]]))
    session = state.extra["session"]
    assert set(session.output_dict_per_obj[0]["cond_frame_outputs"]) == {0, 6}
    assert 6 not in session.output_dict_per_obj[0]["non_cond_frame_outputs"]


def test_memory_stays_flat_in_video_length(predictor):
    import copy

    # A copy with a shorter object-pointer reach: the window becomes num_maskmem (7) frames,
    # so the check needs fewer frames; the pruning code is the same.
    model = copy.deepcopy(predictor.model)
    model.config.max_object_pointers_in_encoder = 4
    predictor = Sam2Predictor(model)
    window = predictor.memory_window
    assert window == 7
    rng = np.random.default_rng(1)
    counts = {}
    for n in (window + 3, 3 * (window + 3)):
        frames = rng.integers(0, 255, (n, 32, 40, 3), dtype=np.uint8)
        for reverse in (False, True):
            state = predictor.init_state(frames)
            start, end = (n - 1, 0) if reverse else (0, n - 1)
            predictor.add_points(state, start, 1, np.array([[10.0, 10.0]]))
            predictor.add_points(state, start, 2, np.array([[30.0, 20.0]]))
            peak: dict[str, int] = {}
            for _ in predictor.propagate(state, start, end, reverse=reverse):
                for k, v in stored_frame_counts(state).items():
                    peak[k] = max(peak.get(k, 0), v)
            counts[(n, reverse)] = peak
    short, long_ = window + 3, 3 * (window + 3)
    for reverse in (False, True):
        assert counts[(short, reverse)] == counts[(long_, reverse)], counts
        c = counts[(long_, reverse)]
        assert c["frames"] <= 1 and c["image_features"] <= 1 and c["cond_outputs"] == 2
        assert c["non_cond_outputs"] <= 2 * (window + 1) and c["tracked"] <= 2 * (window + 1)


def test_state_on_a_frame_folder_and_single_point_shape(predictor, video, tmp_path):
    from PIL import Image

    for t in range(4):
        Image.fromarray(video[t]).save(tmp_path / f"{t:05d}.png")
    state = predictor.init_state(tmp_path)
    from_folder = predictor.add_points(state, 1, 1, np.array([20.0, 20.0]))  # one point as (2,)
    arr_state = predictor.init_state(video[:4])
    np.testing.assert_array_equal(from_folder, predictor.add_points(arr_state, 1, 1, np.array([[20.0, 20.0]])))
    assert [f for f, _ in predictor.propagate(state, 1, 3)] == [1, 2, 3]
    with pytest.warns(UserWarning):  # x == width is column W: outside
        m = predictor.predict_image(video[0], np.array([[float(W), 5.0]]))
    assert not m.any()




@needs_davis
def test_annotate_cli_with_the_sam2_backend(ckpt_dir, tmp_path):
    from typer.testing import CliRunner

    from videomolmo.cli import app

    out = tmp_path / "points.jsonl"
    args = ["annotate", str(DAVIS), "--out", str(out), "--mask-backend", "sam2", "--mask-checkpoint", str(ckpt_dir),
            "--candidates", "2", "--frame-step", "25", "--shard", "1/6"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and {r["frame_index"] for r in rows} == {0, 25}
    assert all(r["candidates"] == 2 and 0 <= r["iou"] <= 1 for r in rows)
    before = out.read_bytes()
    assert CliRunner().invoke(app, args).exit_code == 0  # resumed: nothing to do
    assert out.read_bytes() == before


def test_a_second_click_adds_to_the_first(predictor, video):
    """The shared click rule (MaskPredictor.add_points): clicks on the same frame and object
    accumulate, so two clicks one at a time give the mask of both clicks at once."""
    a = predictor.init_state(video)
    predictor.add_points(a, 0, 1, np.array([[15.0, 20.0]]))
    twice = predictor.add_points(a, 0, 1, np.array([[20.0, 12.0]]), np.array([0]))
    pts, lab = a.prompts[0][1]
    assert pts.tolist() == [[15.0, 20.0], [20.0, 12.0]] and lab.tolist() == [1, 0]
    b = predictor.init_state(video)
    once = predictor.add_points(b, 0, 1, np.array([[15.0, 20.0], [20.0, 12.0]]), np.array([1, 0]))
    np.testing.assert_array_equal(twice, once)
    predictor.reset_state(a)
    assert a.prompts == {} and [objs for _, objs in predictor.propagate(a, 0, 1)] == [{}, {}]
