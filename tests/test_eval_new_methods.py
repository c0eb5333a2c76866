"""`videomolmo eval` with the issue-13 methods, end to end on tiny random native models:
SAM3 alone from text (`--method sam3-text`), Molmo2 as the pointer (`--pointer molmo2`), and the
SAM3 tracker as the mask stage (`--mask-backend sam3`). Random weights score near zero; what is
checked is that every method writes the same row schema, predictions and summary as the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from videomolmo.cli import app  # noqa: E402


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from videomolmo import synth

    return synth.write_dataset(tmp_path_factory.mktemp("synth"), videos=2, seed=0, split="test")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    from transformers import Sam3TrackerVideoModel

    from videomolmo.evaluation.sam3_text import save_tiny_sam3_video
    from videomolmo.pointers.molmo2 import save_tiny_molmo2
    from videomolmo.segmentation.sam3 import tiny_sam3_tracker_config

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    Sam3TrackerVideoModel(tiny_sam3_tracker_config()).save_pretrained(root / "sam3-tracker")
    return {"sam3_video": save_tiny_sam3_video(root / "sam3-video"),
            "molmo2": save_tiny_molmo2(root / "molmo2"), "sam3_tracker": root / "sam3-tracker"}


def _eval(args):
    return CliRunner().invoke(app, ["eval", *map(str, args)])


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "rows.jsonl").read_text().splitlines()]


def test_every_method_writes_the_same_rows(synth_root, ckpts, tmp_path):
    base = ["synthetic", "--data", synth_root, "--k", "4", "--limit", "2"]
    runs = {
        "oracle+cpu": ["--pointer", "oracle"],
        "oracle+sam3": ["--pointer", "oracle", "--mask-backend", "sam3", "--mask-checkpoint", ckpts["sam3_tracker"]],
        "molmo2+sam3": ["--pointer", "molmo2", "--model", ckpts["molmo2"], "--mask-backend", "sam3",
                        "--mask-checkpoint", ckpts["sam3_tracker"]],
        "sam3-text": ["--method", "sam3-text", "--mask-checkpoint", ckpts["sam3_video"]],
    }
    rows = {}
    for name, extra in runs.items():
        run = tmp_path / name
        r = _eval([*base, "--out", run, *extra])
        assert r.exit_code == 0, (name, r.output)
        rows[name] = _rows(run)
        assert len(rows[name]) == 2
        summ = json.loads((run / "summary.json").read_text())
        assert summ["expressions"] == 2 and "JF" in summ["overall"]["masks"]
        for row in rows[name]:
            pngs = list((run / "predictions" / row["video"] / row["exp_id"]).glob("*.png"))
            assert len(pngs) == row["frames"] > 0
            assert 0 <= row["JF"] <= 1
    schema = {name: sorted(r[0]) for name, r in rows.items()}
    assert len({tuple(s) for s in schema.values()}) == 1, schema
    # The oracle with the SAM3 tracker sees the same points as with the cpu backend.
    assert [r["points"] for r in rows["oracle+cpu"]] == [r["points"] for r in rows["oracle+sam3"]]
    # sam3-text's points are anchor frames only (k=4), like a pointer's.
    assert all(int(i) % 4 == 0 for r in rows["sam3-text"] for i in r["points"])
    # The method is part of the run's settings: a pipeline run cannot resume a sam3-text dir.
    r = _eval([*base, "--out", tmp_path / "sam3-text", "--pointer", "oracle"])
    assert r.exit_code == 2 and "other settings" in r.output


def test_method_errors_are_one_line(synth_root, ckpts, tmp_path):
    base = ["synthetic", "--data", synth_root, "--out", tmp_path / "x"]
    r = _eval([*base, "--method", "sam3-text"])
    assert r.exit_code == 2 and "needs --mask-checkpoint" in r.output
    r = _eval([*base, "--method", "nope"])
    assert r.exit_code == 2 and "--method must be" in r.output
    r = _eval([*base, "--method", "sam3-text", "--mask-checkpoint", ckpts["sam3_tracker"]])
    assert r.exit_code == 2 and "expected one of ['sam3_video']" in r.output
    r = _eval([*base, "--pointer", "molmo2"])
    assert r.exit_code == 2 and "needs --model DIR" in r.output


def test_sam3_text_pipeline_api(ckpts):
    from videomolmo.evaluation.sam3_text import Sam3TextPipeline

    pipe = Sam3TextPipeline.from_pretrained(ckpts["sam3_video"], k=3)
    video = np.random.default_rng(0).integers(0, 255, (7, 40, 50, 3), dtype=np.uint8)
    res = pipe(video, "the dog")
    assert sorted(res.points) == [0, 3, 6]
    masks = list(res.masks())
    assert [i for i, _ in masks] == list(range(7))
    assert all(m.shape == (40, 50) and m.dtype == bool for _, m in masks)
    # With detection thresholds at 0 the random detector reports objects on frame 0: the union
    # mask and the per-object points come from them.
    assert masks[0][1].any() and len(res.points[0]) >= 1 and res.count == max(len(p) for p in res.points.values())
    again = pipe(video, "the dog")
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(masks, again.masks()))
    assert {i: p.tolist() for i, p in pipe.point(video, "the dog").points.items()} == \
        {i: p.tolist() for i, p in res.points.items()}
