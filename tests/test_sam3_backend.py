"""The `sam3` backend, run for real on CPU through a tiny random-initialised Sam3TrackerVideoModel.

It inherits the SAM2 backend's session handling, so these tests check what differs (model and
session classes, normalisation, the accepted config type) plus the whole path once: loading,
forward and reverse propagation, bounded memory, and `videomolmo track --mask-backend sam3`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from videomolmo.errors import CheckpointError, ConfigError  # noqa: E402
from videomolmo.segmentation.sam2 import stored_frame_counts  # noqa: E402
from videomolmo.segmentation.sam3 import Sam3TrackerPredictor, tiny_sam3_tracker_config  # noqa: E402

H, W = 48, 64


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> Path:
    from transformers import Sam3TrackerVideoModel

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Sam3TrackerVideoModel(tiny_sam3_tracker_config(112)).eval()
    out = tmp_path_factory.mktemp("sam3") / "tiny"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def predictor(ckpt_dir) -> Sam3TrackerPredictor:
    return Sam3TrackerPredictor.from_pretrained(ckpt_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (10, H, W, 3), dtype=np.uint8)
    for t in range(len(frames)):
        frames[t, 10:30, 8 + 2 * t : 28 + 2 * t] = 230
    return frames


def test_loads_the_native_class_and_checks_the_folder(ckpt_dir, tmp_path):
    from transformers import Sam3TrackerVideoModel

    p = Sam3TrackerPredictor.from_pretrained(ckpt_dir)
    assert isinstance(p.model, Sam3TrackerVideoModel) and p.name == "sam3"
    with pytest.raises(CheckpointError, match="SAM3 tracker checkpoint directory does not exist"):
        Sam3TrackerPredictor.from_pretrained(tmp_path / "nope")
    # A SAM2 folder is not a SAM3 tracker folder, and says so before loading anything.
    wrong = tmp_path / "wrong"
    shutil.copytree(ckpt_dir, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["model_type"] = "sam2_video"
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="expected one of \\['sam3_tracker_video', 'sam3_video'\\]"):
        Sam3TrackerPredictor.from_pretrained(wrong)
    cut = tmp_path / "cut"
    shutil.copytree(ckpt_dir, cut)
    w = next(cut.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Sam3TrackerPredictor.from_pretrained(cut)


def test_a_whole_sam3_video_folder_serves_as_the_tracker(tmp_path):
    from videomolmo.evaluation.sam3_text import save_tiny_sam3_video

    p = Sam3TrackerPredictor.from_pretrained(save_tiny_sam3_video(tmp_path / "sam3"))
    frames = np.random.default_rng(0).integers(0, 255, (3, H, W, 3), dtype=np.uint8)
    state = p.init_state(frames)
    p.add_points(state, 0, 1, np.array([[20.0, 20.0]]))
    assert [i for i, _ in p.propagate(state, 0, 2)] == [0, 1, 2]


def test_registry_builds_it_and_needs_a_folder(ckpt_dir):
    from videomolmo.segmentation.registry import get_predictor

    assert isinstance(get_predictor("sam3", model_dir=ckpt_dir), Sam3TrackerPredictor)
    with pytest.raises(CheckpointError, match="--mask-checkpoint"):
        get_predictor("sam3")
    with pytest.raises(ConfigError, match="sam3"):
        get_predictor("nope")


def test_sam3_normalisation_differs_from_sam2(predictor):
    frame = np.full((H, W, 3), 255, dtype=np.uint8)
    x = predictor.preprocess(frame)
    assert x.shape == (3, 112, 112)
    assert torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_forward_reverse_determinism_and_prompt_sensitivity(predictor, video):
    def run(pt, start, end, reverse):
        state = predictor.init_state(video)
        first = predictor.add_points(state, start, 1, np.array([pt], dtype=float))
        return first, list(predictor.propagate(state, start, end, reverse=reverse))

    first, fwd = run([20.0, 20.0], 3, 8, False)
    assert [f for f, _ in fwd] == [3, 4, 5, 6, 7, 8]
    np.testing.assert_array_equal(fwd[0][1][1], first)
    assert all(m[1].shape == (H, W) and m[1].dtype == bool for _, m in fwd)
    _, back = run([20.0, 20.0], 3, 0, True)
    assert [f for f, _ in back] == [3, 2, 1, 0]
    _, again = run([20.0, 20.0], 3, 8, False)
    assert all(np.array_equal(a[1][1], b[1][1]) for a, b in zip(fwd, again))
    # Random weights, but the low-res logits still depend on the prompt.
    out_a = predictor.predict_image(video[3], np.array([[20.0, 20.0]]))
    out_b = predictor.predict_image(video[3], np.array([[60.0, 40.0]]))
    assert out_a.shape == (H, W) and not np.array_equal(out_a, out_b)


def test_memory_stays_flat(predictor):
    window = predictor.memory_window
    rng = np.random.default_rng(1)
    peaks = []
    for n in (window + 2, 2 * window + 4):
        frames = rng.integers(0, 255, (n, 32, 40, 3), dtype=np.uint8)
        state = predictor.init_state(frames)
        predictor.add_points(state, 0, 1, np.array([[10.0, 10.0]]))
        peak: dict[str, int] = {}
        for _ in predictor.propagate(state, 0, n - 1):
            for k, v in stored_frame_counts(state).items():
                peak[k] = max(peak.get(k, 0), v)
        peaks.append(peak)
    assert peaks[0] == peaks[1], peaks
    assert peaks[1]["non_cond_outputs"] <= window + 1


def test_track_cli_with_the_sam3_backend(ckpt_dir, video, tmp_path):
    from typer.testing import CliRunner

    from videomolmo.cli import app

    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    import cv2

    for i, f in enumerate(video):
        cv2.imwrite(str(frames_dir / f"{i:05d}.jpg"), f[:, :, ::-1])
    (tmp_path / "pts.jsonl").write_text(json.dumps({"0": [[20, 20]], "5": [[30, 20]]}))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["track", str(frames_dir), "-q", "the square", "--out", str(out),
                                 "--points", str(tmp_path / "pts.jsonl"), "--mask-backend", "sam3",
                                 "--mask-checkpoint", str(ckpt_dir), "--no-overlay"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "masks").glob("*.png"))) == len(video)
    r = CliRunner().invoke(app, ["track", str(frames_dir), "-q", "x", "--out", str(out),
                                 "--points", str(tmp_path / "pts.jsonl"), "--mask-backend", "sam3"])
    assert r.exit_code == 2 and "--mask-checkpoint" in r.output
