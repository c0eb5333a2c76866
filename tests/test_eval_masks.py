"""`videomolmo eval-masks` / `eval-baseline` and `evaluate_predictions`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import needs_davis  # noqa: E402
from fixtures_data import DAVIS, FRAMES, build_mevis, build_refdavis, build_revos, build_ytvos, davis_mask
from videomolmo.cli import app
from videomolmo.data import load_dataset
from videomolmo.evaluation.masks import evaluate_predictions



def run(*args: str):
    return CliRunner().invoke(app, list(args))


def error_lines(result) -> list[str]:
    text = result.stderr if result.stderr else result.output
    return [line for line in text.splitlines() if line.strip()]


def write_pred(mask: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def gt_as_predictions(ds, pred, skip=()):
    """Write every expression's ground truth as its prediction (except the `skip` keys)."""
    for s in ds:
        if s.key in skip:
            continue
        for t, name in enumerate(s.frame_names):
            write_pred(s.gt_mask(t), pred / s.video_id / s.exp_id / f"{name}.png")


@needs_davis
def test_davis16_mini_gt_as_predictions_scores_one_and_missing_scores_zero(tmp_path):
    """The acceptance check: GT copied as predictions gives J = F = 1, except one expression
    left out, which is listed and scored 0. The GT PNGs are linked, not re-encoded."""
    pred = tmp_path / "pred"
    meta = json.loads((DAVIS / "meta_expressions.json").read_text())
    for video, entry in meta["videos"].items():
        for exp_id in entry["expressions"]:
            if (video, exp_id) == ("dog", "1"):
                continue
            folder = pred / video / exp_id
            folder.mkdir(parents=True)
            for f in entry["frames"]:
                os.symlink((DAVIS / "Annotations" / video / f"{f}.png").resolve(), folder / f"{f}.png")
    out = tmp_path / "scores.json"
    result = run("eval-masks", "--data", str(DAVIS), "--pred", str(pred), "--json", str(out), "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "overall" in result.stdout and "dog" in result.stdout

    scores = json.loads(out.read_text())
    assert set(scores) == {"overall", "expressions", "missing"}
    assert set(scores["overall"]) == {"J", "F", "J&F"}
    assert len(scores["expressions"]) == 12
    for row in scores["expressions"]:
        assert set(row) == {"video", "exp_id", "J", "F", "J&F", "frames"}
        assert row["frames"] == len(meta["videos"][row["video"]]["frames"])
        expected = 0.0 if (row["video"], row["exp_id"]) == ("dog", "1") else 1.0
        assert row["J"] == pytest.approx(expected, abs=1e-12)
        assert row["F"] == pytest.approx(expected, abs=1e-12)
        assert row["J&F"] == pytest.approx(expected, abs=1e-12)
    assert scores["missing"] == ["dog/1"]
    assert scores["overall"]["J"] == pytest.approx(11 / 12) and scores["overall"]["F"] == pytest.approx(11 / 12)
    assert "1 missing prediction" in result.stdout


@needs_davis
def test_scores_match_first_principles_and_missing_frame_scores_zero(tmp_path):
    root, _ = build_refdavis(tmp_path)
    ds = load_dataset(root)
    pred = tmp_path / "pred"
    gt_as_predictions(ds, pred)
    # dog/0: predict the DAVIS object shifted 20 px right (beyond F's 8 px tolerance) on every frame; drop frame 2 of blackswan/1
    for t, f in enumerate(FRAMES):
        write_pred(np.roll(davis_mask("dog", f), 20, axis=1), pred / "dog" / "0" / f"{f}.png")
    (pred / "blackswan" / "1" / "00002.png").unlink()
    res = evaluate_predictions(ds, pred, workers=1, progress=False)
    rows = {(r["video"], r["exp_id"]): r for r in res["expressions"]}

    ious = []
    for f in FRAMES:
        gt = davis_mask("dog", f)
        pr = np.roll(gt, 20, axis=1)
        ious.append((gt & pr).sum() / (gt | pr).sum())
    assert rows["dog", "0"]["J"] == pytest.approx(np.mean(ious), abs=1e-12)
    assert 0 < rows["dog", "0"]["F"] < 1
    assert rows["blackswan", "1"]["J"] == pytest.approx(2 / 3) and rows["blackswan", "1"]["F"] == pytest.approx(2 / 3)
    assert res["missing"] == ["blackswan/1/00002.png"]
    js = [r["J"] for r in res["expressions"]]
    assert res["overall"]["J"] == pytest.approx(np.mean(js))
    assert res["overall"]["J&F"] == pytest.approx((res["overall"]["J"] + res["overall"]["F"]) / 2)


@needs_davis
def test_rle_benchmark_with_empty_ground_truth(tmp_path):
    root, _ = build_mevis(tmp_path)
    ds = load_dataset(root)
    pred = tmp_path / "pred"
    gt_as_predictions(ds, pred)
    res = evaluate_predictions(ds, pred, workers=1, progress=False)
    # empty GT and empty prediction score 1 (DAVIS convention), so a perfect run is 1 throughout
    assert res["overall"]["J"] == pytest.approx(1.0) and res["overall"]["F"] == pytest.approx(1.0)
    assert res["missing"] == []


@needs_davis
def test_size_mismatch_is_one_line_and_exit_2(tmp_path):
    root, _ = build_refdavis(tmp_path)
    ds = load_dataset(root)
    pred = tmp_path / "pred"
    gt_as_predictions(ds, pred)
    bad = pred / "blackswan" / "2" / "00001.png"
    write_pred(np.zeros((240, 427), dtype=bool), bad)
    result = run("eval-masks", "--data", str(root), "--pred", str(pred), "--workers", "1")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "Traceback" not in result.output
    assert str(bad) in lines[0] and "427x240" in lines[0] and "854x480" in lines[0]


@needs_davis
def test_unreadable_prediction_is_one_line(tmp_path):
    root, _ = build_refdavis(tmp_path)
    pred = tmp_path / "pred"
    gt_as_predictions(load_dataset(root), pred)
    (pred / "dog" / "0" / "00000.png").write_bytes(b"\x89PNG broken")
    result = run("eval-masks", "--data", str(root), "--pred", str(pred), "--workers", "1")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "00000.png" in lines[0] and "unreadable" in lines[0]


def test_unknown_layout_exit_2(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "pred").mkdir()
    result = run("eval-masks", "--data", str(tmp_path / "data"), "--pred", str(tmp_path / "pred"))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "unknown dataset layout" in lines[0] and str(tmp_path / "data") in lines[0]


@needs_davis
def test_split_without_ground_truth_and_missing_pred_dir(tmp_path):
    root, _ = build_ytvos(tmp_path)
    (tmp_path / "pred").mkdir()
    result = run("eval-masks", "--data", str(root), "--pred", str(tmp_path / "pred"))
    assert result.exit_code == 2 and "no ground-truth masks" in error_lines(result)[0]
    result = run("eval-masks", "--data", str(root), "--split", "train", "--pred", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "prediction folder does not exist" in error_lines(result)[0]


@needs_davis
def test_eval_baseline_writes_submission_and_scores_it(tmp_path):
    root, expected = build_refdavis(tmp_path)
    out = tmp_path / "baseline"
    scores = tmp_path / "baseline.json"
    result = run("eval-baseline", "--data", str(root), "--out", str(out), "--json", str(scores), "--workers", "1")
    assert result.exit_code == 0, result.output
    # the submission layout: 0/255 L-mode PNGs of the first frame's GT on every frame
    for (video, exp_id), masks in expected.items():
        for f in FRAMES:
            im = Image.open(out / video / exp_id / f"{f}.png")
            assert im.mode == "L" and im.size == (854, 480)
            arr = np.array(im)
            assert set(np.unique(arr)) <= {0, 255} and np.array_equal(arr > 0, masks[0])
    res = json.loads(scores.read_text())
    row = next(r for r in res["expressions"] if (r["video"], r["exp_id"]) == ("dog", "0"))
    gts = expected["dog", "0"]
    iou = np.mean([(g & gts[0]).sum() / (g | gts[0]).sum() for g in gts])
    assert row["J"] == pytest.approx(iou, abs=1e-12)
    assert res["missing"] == []
    # the default run uses a temporary folder and leaves nothing behind
    result = run("eval-baseline", "--data", str(root), "--workers", "1")
    assert result.exit_code == 0 and "overall" in result.stdout


@needs_davis
def test_revos_nested_video_keys_and_kind_rows(tmp_path):
    root, _ = build_revos(tmp_path)
    ds = load_dataset(root)
    pred = tmp_path / "pred"
    gt_as_predictions(ds, pred, skip={("Ref-Youtube-VOS/dog", "1")})
    assert (pred / "Ref-Youtube-VOS" / "dog" / "0" / "00000.png").is_file()
    out = tmp_path / "s.json"
    result = run("eval-masks", "--data", str(root), "--pred", str(pred), "--json", str(out), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "kind: referring" in result.stdout and "kind: reasoning" in result.stdout
    res = json.loads(out.read_text())
    assert res["missing"] == ["Ref-Youtube-VOS/dog/1"]
    assert res["overall"]["J"] == pytest.approx(7 / 8)


@needs_davis
def test_table_names_the_split_literally(tmp_path):
    root, _ = build_ytvos(tmp_path)
    result = run("eval-baseline", "--data", str(root), "--split", "train", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "Ref-YouTube-VOS [train]: 4 expressions on 2 videos" in result.stdout  # not eaten as markup
