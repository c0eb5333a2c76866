import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from videomolmo import bundled
from videomolmo.cli import app
from videomolmo.demo import demo_clip, score_query
from videomolmo.errors import CheckpointError

torch.set_num_threads(1)


def test_demo_clip_has_motion_only_and_counting_queries():
    clip, (m, c) = demo_clip()
    em, ec = clip.expressions[m], clip.expressions[c]
    assert em.kind == "motion" and ec.kind == "count" and len(ec.obj_ids) >= 2
    k = em.obj_ids[0]
    twins = [s for s in clip.sprites if (s.shape, s.colour) == (clip.sprites[k].shape, clip.sprites[k].colour)]
    assert len(twins) >= 2  # unanswerable from one frame


def test_score_query_perfect_and_empty():
    clip, (m, _) = demo_clip()
    e = clip.expressions[m]
    T = clip.frames.shape[0]
    gt_pts = {t: clip.target_points(e.obj_ids, t) for t in range(T)}
    gt_masks = {t: clip.union_mask(e.obj_ids, t) for t in range(T)}
    s = score_query(clip, m, gt_pts, gt_masks)
    assert s["point_f1"] == 1.0 and s["j"] == 1.0 and s["jf"] == 1.0
    empty = score_query(clip, m, {t: np.zeros((0, 2)) for t in range(T)},
                        {t: np.zeros_like(gt_masks[t]) for t in range(T)})
    assert empty["point_f1"] == 0.0 and empty["j"] == 0.0


def test_bundled_model_loads_offline():
    model, processor = bundled.load_default()
    info = bundled.bundled_info()
    assert model.config.name == info["model"]["name"]
    assert (bundled.assets_dir() / bundled.WEIGHTS).stat().st_size <= 25 * 2**20
    assert not model.training and processor.tokenizer is not None


def test_missing_bundle_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(bundled, "assets_dir", lambda: tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        bundled.load_default()


def test_demo_command_writes_everything(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--out", str(out), "--k", "3"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert [q["kind"] for q in summary["queries"]] == ["motion", "count"]
    for q in summary["queries"]:
        d = out / q["kind"]
        assert (d / "points.jsonl").is_file() and (d / "overlay.mp4").stat().st_size > 0
        assert (d / "overlay.png").stat().st_size > 0  # contact sheet with ground truth and legend
        assert len(list((d / "masks").glob("*.png"))) == summary["frames"]
        for key in ("point_f1", "j", "f", "jf"):
            assert 0.0 <= q[key] <= 1.0
    assert "J&F" in r.output and "count" in r.output
