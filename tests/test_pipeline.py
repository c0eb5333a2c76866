"""The end-to-end pipeline and the `track` / `point` / `count` / `eval` commands.

The model-free parts run on real data: the oracle pointer on the synthetic benchmark and on
davis16-mini. Commands that need stage 1 use the bundled model (whatever its quality: these
tests check plumbing and file contracts, not accuracy).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videomolmo.cli import app
from videomolmo.errors import ConfigError
from videomolmo.counting import distinct_points
from videomolmo.pipeline import Pipeline, PipelineConfig
from videomolmo.pointers.oracle import OraclePointer, interior_points
from videomolmo.pointers.static import StaticPointer
from videomolmo.settings import anchor_frames, check_query
from conftest import DAVIS, needs_davis  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from videomolmo import synth

    return synth.write_dataset(tmp_path_factory.mktemp("synth"), videos=2, seed=0, split="test")


def _box_video(n=12, h=64, w=80):
    frames = []
    for t in range(n):
        f = np.full((h, w, 3), 40, np.uint8)
        f[20:40, 10 + 2 * t : 30 + 2 * t] = (230, 50, 50)
        frames.append(f)
    return frames


# --------------------------------------------------------------------------- pure helpers


def test_query_checks():
    assert check_query("  the   dog\n") == "the dog"
    assert check_query("der Hund 🐕 über") == "der Hund 🐕 über"
    for bad in ("", "   \t", "x" * 10_000):
        with pytest.raises(ConfigError):
            check_query(bad)
    for k, tau in ((0, 0.5), (-1, 0.5), (5, 1.5), (5, -0.1)):
        with pytest.raises(ConfigError):
            PipelineConfig(k=k, tau=tau)


def test_anchor_frames_and_baseline_schedule():
    assert anchor_frames(12, 5) == [0, 5, 10]
    assert anchor_frames(12, 5, first_frame_only=True) == [0]


def test_interior_points_lie_inside_each_region():
    m = np.zeros((50, 60), bool)
    m[5:15, 5:45] = True  # a bar
    m[30:48, 40:58] = True  # a square
    pts = interior_points(m)
    assert len(pts) == 2
    for x, y in pts:
        assert m[int(y), int(x)]


def test_distinct_points_merge_duplicates():
    pts = np.array([[10, 10], [10.5, 10.2], [50, 50]])
    assert len(distinct_points(pts, 100, 100)) == 2


# --------------------------------------------------------------------------- pipeline


def test_pipeline_streams_masks_and_saves_everything(tmp_path: Path):
    frames = _box_video()
    pts = {0: [[20.0, 30.0]], 5: [[30.0, 30.0]], 10: [[40.0, 30.0]]}
    pipe = Pipeline(StaticPointer(pts), PipelineConfig(k=5))
    res = pipe(frames, "the red box")
    assert res.sampled_frames == [0, 5, 10] and res.count == 1
    masks = list(res.masks())
    assert [i for i, _ in masks] == list(range(12))
    # The box is found where it is, on every frame (a real mask stage, not a copy of the anchor).
    for i, m in masks:
        assert m.dtype == bool and m.shape == (64, 80)
        assert m[30, 20 + 2 * i], i
        assert not m[5, 5]
    files = res.save(tmp_path / "out")
    out = tmp_path / "out"
    # upstream's points.jsonl: one object, frame index -> list of [x, y] pixels
    pts_file = json.loads((out / "points.jsonl").read_text())
    assert list(pts_file) == ["0", "5", "10"] and pts_file["5"] == [[30.0, 30.0]]
    assert len(list((out / "masks").glob("*.png"))) == 12
    assert (out / "overlay.mp4").stat().st_size > 0 and set(files) == {"points", "count", "masks", "overlay"}
    assert json.loads((out / "count.json").read_text())["count"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_point_only_result_has_no_mask_stage():
    res = Pipeline(StaticPointer({0: [[1, 1]]})).point(_box_video(4), "x", k=2)
    assert res.sampled_frames == [0, 2]
    with pytest.raises(ConfigError):
        next(res.masks())


def test_oracle_pointer_on_synthetic_gives_near_perfect_masks(synth_root: Path):
    from videomolmo.data import load_dataset
    from videomolmo.metrics import jaccard

    ds = load_dataset(synth_root, fmt="mevis")
    s = next(x for x in ds if len(x.obj_ids) >= 1 and x.gt_mask(0).any())
    res = Pipeline(OraclePointer.from_sample(s), PipelineConfig(k=3))(s.video(), s.expression)
    js = [float(jaccard(s.gt_mask(i), m)) for i, m in res.masks()]
    assert np.mean(js) > 0.8, js
    visible = sum(1 for m in s.gt_object_masks(0) if m.any())
    assert res.counts[0] == visible


# --------------------------------------------------------------------------- eval


def _eval(args, **kw):
    return runner.invoke(app, ["eval", *args], catch_exceptions=False, **kw)


def test_eval_synthetic_oracle_writes_layout_rows_summary_and_resumes(synth_root: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["synthetic", "--data", str(synth_root), "--out", str(run), "--pointer", "oracle", "--k", "3",
            "--render-worst", "1"]
    r = _eval(args)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (run / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3
    for row in rows:
        n = row["frames"]
        assert len(list((run / "predictions" / row["video"] / row["exp_id"]).glob("*.png"))) == n
        assert row["P"] is not None and "count_gt" in row
    summ = json.loads((run / "summary.json").read_text())
    assert summ["overall"]["masks"]["JF"] > 60
    assert "J&F" in (run / "summary.md").read_text()
    assert list((run / "worst").glob("*.mp4")) and list((run / "worst").glob("*.png"))
    # Rerun: nothing recomputed, nothing duplicated.
    r = _eval(args)
    assert "0 units evaluated now, 3 already done" in r.output
    assert len((run / "rows.jsonl").read_text().splitlines()) == 3
    # Different settings into the same run dir are refused.
    r = runner.invoke(app, ["eval", *args[:-4], "--k", "2"])
    assert r.exit_code == 2 and "other settings" in r.output


def test_eval_compare_and_context_ablation_options(synth_root: Path, tmp_path: Path):
    import torch

    from videomolmo.model import ModelConfig, VideoMolmo, save_pretrained

    torch.manual_seed(0)
    save_pretrained(VideoMolmo(ModelConfig.from_name("test-tiny")), tmp_path / "m")
    base = ["synthetic", "--data", str(synth_root), "--points-only", "--model", str(tmp_path / "m"), "--k", "3"]
    r = _eval(base + ["--out", str(tmp_path / "normal")])
    assert r.exit_code == 0, r.output
    r = _eval(base + ["--out", str(tmp_path / "shuffle"), "--context", "shuffle"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "shuffle" / "config.json").read_text())["extra"]["context"] == "shuffle"
    summ = json.loads((tmp_path / "shuffle" / "summary.json").read_text())
    assert "F1_ci" in summ["overall"]["points"]
    r = runner.invoke(app, ["eval-compare", str(tmp_path / "normal"), str(tmp_path / "shuffle"),
                            "--json", str(tmp_path / "cmp.json")])
    assert r.exit_code == 0, r.output
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["paired"] == 3 and cmp["rows"][0]["metric"] == "F1" and cmp["rows"][0]["n"] == 3
    r = runner.invoke(app, ["eval", *base, "--out", str(tmp_path / "x"), "--context", "sideways"])
    assert r.exit_code == 2 and "context" in r.output
    r = runner.invoke(app, ["eval", "synthetic", "--data", str(synth_root), "--out", str(tmp_path / "y"),
                            "--pointer", "oracle", "--context", "repeat"])
    assert r.exit_code == 2 and "--pointer model" in r.output
    r = runner.invoke(app, ["eval-compare", str(tmp_path / "normal"), str(tmp_path / "nope")])
    assert r.exit_code == 2
    # --point-decode: a model without the patch head is refused before any run folder exists.
    r = runner.invoke(app, ["eval", *base, "--out", str(tmp_path / "p"), "--point-decode", "patch"])
    assert r.exit_code == 2 and "no patch pointing head" in r.output and not (tmp_path / "p").exists()
    r = runner.invoke(app, ["eval", *base, "--out", str(tmp_path / "p"), "--point-decode", "digits"])
    assert r.exit_code == 2 and "point decode must be one of" in r.output
    r = runner.invoke(app, ["eval", "synthetic", "--data", str(synth_root), "--out", str(tmp_path / "p"),
                            "--pointer", "oracle", "--point-decode", "text"])
    assert r.exit_code == 2 and "--pointer model" in r.output
    torch.manual_seed(0)
    save_pretrained(VideoMolmo(ModelConfig.from_name("test-tiny", crop_mode="resize", pool="none", max_crops=1,
                                                     point_head="patch")), tmp_path / "mh")
    head = ["synthetic", "--data", str(synth_root), "--points-only", "--model", str(tmp_path / "mh"), "--k", "3"]
    r = _eval(head + ["--out", str(tmp_path / "patch"), "--point-decode", "patch"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "patch" / "config.json").read_text())["extra"]["point_decode"] == "patch"
    # Without --point-decode a head model's default read-out is recorded, so a run resumed under
    # another read-out is refused instead of mixing the two in one summary.
    r = _eval(head + ["--out", str(tmp_path / "default")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "default" / "config.json").read_text())["extra"]["point_decode"] == "patch-extra"
    r = runner.invoke(app, ["eval", *head, "--out", str(tmp_path / "default"), "--point-decode", "patch"])
    assert r.exit_code == 2 and "point_decode" in r.output, r.output


def test_eval_shards_merge_into_one_summary(synth_root: Path, tmp_path: Path):
    run = tmp_path / "run"
    base = ["synthetic", "--data", str(synth_root), "--out", str(run), "--pointer", "oracle", "--points-only"]
    r0 = _eval(base + ["--shard", "0/2"])
    assert "waiting for the other shards" in r0.output and not (run / "summary.json").exists()
    r = _eval(base + ["--merge"])
    assert r.exit_code == 1
    _eval(base + ["--shard", "1/2"])
    assert (run / "summary.json").exists()
    summ = json.loads((run / "summary.json").read_text())
    assert summ["expressions"] == 3 and summ["overall"]["points"]["F1"] > 90
    assert sorted(p.name for p in run.glob("rows*.jsonl")) == ["rows.shard-0-of-2.jsonl", "rows.shard-1-of-2.jsonl"]


def test_eval_under_torchrun_env_takes_its_rank_as_shard(synth_root: Path, tmp_path: Path):
    run = tmp_path / "run"
    base = ["synthetic", "--data", str(synth_root), "--out", str(run), "--pointer", "oracle", "--points-only"]
    r = runner.invoke(app, ["eval", *base], env={"RANK": "1", "WORLD_SIZE": "3"}, catch_exceptions=False)
    assert "shard 1/3" in r.output and (run / "rows.shard-1-of-3.jsonl").exists()


@pytest.mark.slow
@needs_davis
def test_eval_kill_minus_9_then_resume_on_real_data(tmp_path: Path):
    """kill -9 a real `videomolmo eval` mid-run; the rerun finishes with every row exactly once."""
    from videomolmo.data import load_dataset

    # A 2-video slice of davis16-mini at low resolution keeps this test short on 2 cores.
    from PIL import Image

    src = load_dataset(DAVIS)
    data = tmp_path / "davis"
    (data / "JPEGImages").mkdir(parents=True)
    (data / "Annotations").mkdir()
    meta = json.loads((DAVIS / "meta_expressions.json").read_text())
    keep = sorted(meta["videos"])[:2]
    meta["videos"] = {v: {**meta["videos"][v], "frames": meta["videos"][v]["frames"][:8]} for v in keep}
    for v in keep:
        for d in ("JPEGImages", "Annotations"):
            (data / d / v).mkdir()
        for f in meta["videos"][v]["frames"]:
            Image.open(DAVIS / "JPEGImages" / v / f"{f}.jpg").resize((214, 120)).save(data / "JPEGImages" / v / f"{f}.jpg")
            Image.open(DAVIS / "Annotations" / v / f"{f}.png").resize((214, 120), Image.NEAREST).save(
                data / "Annotations" / v / f"{f}.png")
    (data / "meta_expressions.json").write_text(json.dumps(meta))
    assert len(src) >= 4
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from videomolmo.cli import main; main()", "eval", "ref-davis17",
           "--data", str(data), "--out", str(run), "--pointer", "oracle", "--k", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    rows_file = run / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (rows_file.exists() and rows_file.read_text().count("\n") >= 1):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = rows_file.read_text().count("\n") if rows_file.exists() else 0
    assert n_before < 4, "the run finished before it could be killed"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{4 - n_before} units evaluated now, {n_before} already done" in out.stdout
    keys = [json.loads(x)["key"] for x in rows_file.read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4
    summ = json.loads((run / "summary.json").read_text())
    assert set(summ["overall"]["masks"]["variants"]) == {"anno_0", "anno_1"}
    assert len(list((run / "anno_0" / keep[0]).glob("*.png"))) == 8
    assert not list(run.rglob(".*tmp*")) and not list(run.rglob("*.partial*"))


@needs_davis
@pytest.mark.parametrize("bench,builder", [("ref-davis17", "build_refdavis"), ("ref-youtube-vos", "build_ytvos"),
                                           ("mevis", "build_mevis"), ("revos", "build_revos"),
                                           ("reasonvos", "build_reasonvos")])
def test_eval_reads_every_benchmark_layout(tmp_path: Path, bench: str, builder: str):
    """Every benchmark's layout goes through `eval` (points only, to stay fast; oracle points
    where the split has ground truth, the bundled model where it has none)."""
    import fixtures_data

    root, expected = getattr(fixtures_data, builder)(tmp_path / "data")
    run = tmp_path / "run"
    split = ["--split", "train"] if bench == "ref-youtube-vos" else []  # the fixture's GT split
    r = _eval([bench, "--data", str(root), "--out", str(run), "--pointer", "oracle", "--points-only", *split])
    assert r.exit_code == 0, r.output
    summ = json.loads((run / "summary.json").read_text())
    assert summ["expressions"] == len(expected)
    keys = {json.loads(x)["key"] for x in (run / "rows.jsonl").read_text().splitlines()}
    assert keys == {f"{v}/{e}" for v, e in expected}
    if bench == "ref-youtube-vos":
        # The official valid split has no ground truth: predictions for the server, no scores.
        run2 = tmp_path / "valid"
        r = _eval([bench, "--data", str(root), "--out", str(run2), "--k", "2"])
        assert r.exit_code == 0, r.output
        summ = json.loads((run2 / "summary.json").read_text())
        assert "no ground truth" in summ["note"] and summ["expressions"] == 2
        assert len(list((run2 / "predictions").rglob("*.png"))) == 2 * len(fixtures_data.YT_FRAMES)


def test_progress_reports_both_stages():
    seen: dict[str, list[tuple[int, int]]] = {}
    frames = _box_video(6)
    pipe = Pipeline(OraclePointer(lambda i: np.asarray(frames[i][..., 0] > 150)), PipelineConfig(k=3))
    res = pipe(frames, "the red box", progress=lambda s, d, t: seen.setdefault(s, []).append((d, t)))
    list(res.masks(progress=lambda s, d, t: seen.setdefault(s, []).append((d, t))))
    assert seen["pointing"][-1] == (2, 2) and seen["masks"][-1] == (6, 6)


def test_serve_prunes_old_result_folders(tmp_path):
    import os
    import time

    from videomolmo.serve import prune_runs

    for i in range(5):
        d = tmp_path / f"run-{i}"
        d.mkdir()
        os.utime(d, (time.time() - 100 + i, time.time() - 100 + i))
    prune_runs(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-3", "run-4"]


def test_track_from_a_points_file_runs_stage_2_only(tmp_path: Path):
    from videomolmo.video import write_video

    clip = tmp_path / "box.mp4"
    write_video(clip, _box_video(10), fps=10)
    pts = tmp_path / "points.jsonl"
    pts.write_text(json.dumps({"0": [[20.0, 30.0]], "5": [[30.0, 30.0]]}) + "\n")
    r = runner.invoke(app, ["track", str(clip), "--query", "the red box", "--points", str(pts),
                            "--out", str(tmp_path / "out"), "--no-overlay"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "points.jsonl").read_text()) == json.loads(pts.read_text())
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 10
    # Points off the anchor grid, or not a points file: one-line errors.
    r = runner.invoke(app, ["track", str(clip), "-q", "x", "--points", str(pts), "--k", "3", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "not a multiple of --k" in r.output
    pts.write_text("[1, 2]")
    r = runner.invoke(app, ["track", str(clip), "-q", "x", "--points", str(pts), "--out", str(tmp_path / "o3")])
    assert r.exit_code == 2 and "expected a JSON object" in r.output


def test_track_reports_the_mask_backends_confidence_per_frame(tmp_path):
    from conftest import moving_box_frames, write_frames

    clip = write_frames(tmp_path / "clip", moving_box_frames(8, h=48, w=64, box=16, step=2))
    pts = tmp_path / "pts.json"
    pts.write_text('{"0": [[10, 24]], "4": [[18, 24]]}')
    r = runner.invoke(app, ["track", str(clip), "-q", "the square", "--points", str(pts), "--k", "4",
                            "--out", str(tmp_path / "o"), "--no-overlay"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "o" / "count.json").read_text())
    scores = report["mask_scores"]
    assert sorted(map(int, scores)) == list(range(8))
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert report["mean_mask_score"] == pytest.approx(np.mean(list(scores.values())), abs=1e-4)
    assert "mean mask confidence" in r.output
