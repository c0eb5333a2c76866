"""The resumable benchmark runner: atomic rows, torn tails, shards, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from videomolmo.errors import ConfigError, DatasetError, VideoMolmoError
from videomolmo.evaluation import summary
from videomolmo.files import JsonlLog
from videomolmo.evaluation.journal import Shard, complete_units, missing_units, read_all_rows, run_units
from videomolmo.evaluation.runner import RunConfig, make_units, prepare_run_dir


@dataclass
class FakeSample:
    video_id: str
    exp_id: str


def _units(n=10):
    return make_units("mevis", [FakeSample(f"v{i:02d}", "0") for i in range(n)])


def _process(unit):
    return [{"key": f"{s.video_id}/{s.exp_id}", "J": 0.5, "F": 0.7, "JF": 0.6} for s in unit.samples]


def test_rowlog_repairs_torn_tail_and_appends_cleanly(tmp_path: Path):
    log = JsonlLog(tmp_path / "rows.jsonl")
    log.append([{"key": "a"}, {"key": "b"}])
    with open(log.path, "ab") as fh:
        fh.write(b'{"key": "c", "J": 0.')  # torn by a crash
    assert [r["key"] for r in log.read()] == ["a", "b"]
    assert log.repair() > 0
    log.append([{"key": "c"}])
    assert [r["key"] for r in log.read()] == ["a", "b", "c"]
    assert log.path.read_bytes().count(b"\n") == 3


def test_rowlog_drops_garbage_complete_last_line(tmp_path: Path):
    log = JsonlLog(tmp_path / "rows.jsonl")
    log.append([{"key": "a"}])
    with open(log.path, "ab") as fh:
        fh.write(b"\x00\x00\x00\n")
    log.repair()
    assert log.path.read_bytes() == b'{"key": "a"}\n'


def test_shard_parsing_and_env(monkeypatch):
    assert Shard.parse("1/4") == Shard(1, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            Shard.parse(bad)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert Shard.parse(None) == Shard(2, 3)
    assert Shard(2, 3).rows_name == "rows.shard-2-of-3.jsonl"


def test_units_sorted_and_davis_grouped_by_annotator():
    samples = [FakeSample("b", str(e)) for e in range(8)] + [FakeSample("a", "0")]
    units = make_units("ref-davis17", samples)
    assert [u.key for u in units] == ["a/anno_0", "b/anno_0", "b/anno_1", "b/anno_2", "b/anno_3"]
    assert [s.exp_id for s in units[1].samples] == ["0", "4"]
    with pytest.raises(DatasetError):
        make_units("mevis", [FakeSample("a", "0"), FakeSample("a", "0")])


def test_run_dir_refuses_other_settings(tmp_path: Path):
    prepare_run_dir(tmp_path / "run", RunConfig("mevis", "d", k=5))
    prepare_run_dir(tmp_path / "run", RunConfig("mevis", "d", k=5))
    with pytest.raises(ConfigError, match="k: 5 -> 3"):
        prepare_run_dir(tmp_path / "run", RunConfig("mevis", "d", k=3))


def test_resume_skips_done_units_and_shards_merge(tmp_path: Path):
    units = _units(10)
    calls = []

    def proc(u):
        calls.append(u.key)
        return _process(u)

    st0 = run_units(tmp_path, units, proc, Shard(0, 2))
    assert st0.done_now == 5 and not st0.complete
    assert len(missing_units(tmp_path, units)) == 5
    st1 = run_units(tmp_path, units, proc, Shard(1, 2))
    assert st1.complete and len(calls) == 10
    again = run_units(tmp_path, units, proc, Shard(0, 2))
    assert again.done_now == 0 and again.done_before == 5 and len(calls) == 10
    rows = read_all_rows(tmp_path)
    assert len(rows) == 10 and complete_units(rows) == {u.key for u in units}


def test_bad_unit_is_skipped_and_retried_later(tmp_path: Path):
    units = _units(3)
    errors = []

    def flaky(u):
        if u.key == "v01/0":
            raise VideoMolmoError("v01: corrupt frame")
        return _process(u)

    st = run_units(tmp_path, units, flaky, on_error=lambda u, e: errors.append(str(e)))
    assert st.failed == ["v01/0"] and errors == ["v01: corrupt frame"] and not st.complete
    st = run_units(tmp_path, units, _process)
    assert st.done_now == 1 and st.complete


_CHILD = r"""
import sys, time
from dataclasses import dataclass
from videomolmo.evaluation.journal import run_units
from videomolmo.evaluation.runner import make_units

@dataclass
class S:
    video_id: str
    exp_id: str

units = make_units("ref-davis17", [S(f"v{i:02d}", str(e)) for i in range(6) for e in range(8)])

def proc(u):
    time.sleep(0.05)
    return [{"key": f"{s.video_id}/{s.exp_id}", "J": 0.5, "F": 0.5, "JF": 0.5, "annotator": int(s.exp_id) % 4}
            for s in u.samples]

def progress(done, total, key):
    print(done, flush=True)

run_units(sys.argv[1], units, proc, progress=progress)
print("FINISHED", flush=True)
"""


def test_kill_minus_9_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path: Path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(run)], stdout=subprocess.PIPE, text=True)
    # Wait until a few units are done, then kill without any chance to clean up.
    for line in proc.stdout:
        if line.strip().isdigit() and int(line) >= 7:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_all_rows(run)
    assert 0 < len(before) < 48
    # Simulate the worst case: the kill tore the last write.
    with open(run / "rows.jsonl", "ab") as fh:
        fh.write(b'{"key": "v05/7", "J"')
    out = subprocess.run([sys.executable, str(script), str(run)], capture_output=True, text=True, timeout=120)
    assert "FINISHED" in out.stdout, out.stderr
    lines = (run / "rows.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines]
    assert len(keys) == len(set(keys)) == 48
    s = summary.summarize("ref-davis17", list(read_all_rows(run).values()))
    assert s["overall"]["masks"]["n"] == 48
    assert set(s["overall"]["masks"]["variants"]) == {"anno_0", "anno_1", "anno_2", "anno_3"}


def test_summary_tables():
    rows = [
        {"key": "a/0", "J": 0.4, "F": 0.6, "JF": 0.5, "annotator": 0, "category": "referring"},
        {"key": "a/1", "J": 0.8, "F": 1.0, "JF": 0.9, "annotator": 1, "category": "reasoning"},
        {"key": "b/0", "P": 1.0, "R": 0.5, "F1": 2 / 3, "tp": 1, "fp": 0, "fn": 1, "count": 2, "count_gt": 2},
        {"key": "b/1", "P": 0.0, "R": 0.0, "F1": 0.0, "tp": 0, "fp": 1, "fn": 1, "count": 1, "count_gt": 3},
    ]
    s = summary.summarize("ref-davis17", rows)
    m = s["overall"]["masks"]
    assert m["J"] == pytest.approx(60.0) and m["JF"] == pytest.approx(70.0)
    assert s["overall"]["points"]["micro_F1"] == pytest.approx(100 * 2 / 5)
    c = s["overall"]["counting"]
    assert (c["MAE"], c["EMA"], c["n"]) == (1.0, 50.0, 2)
    assert c["EMA_ci"][0] <= 50.0 <= c["EMA_ci"][1] and c["MAE_ci"][0] <= 1.0 <= c["MAE_ci"][1]
    assert s["overall"]["points"]["F1_ci"][0] <= s["overall"]["points"]["F1"] <= s["overall"]["points"]["F1_ci"][1]
    assert set(s["categories"]) == {"reasoning", "referring"}
    md = summary.to_markdown(s)
    assert "| overall | 60.0 | 80.0 | 70.0 | - | 2 |" in md and "MAE" in md
    # The annotator variants are named in words and explained, not left as "anno_0".
    assert "| overall, annotator 0 | 40.0 | 60.0 | 50.0 | - | 1 |" in md and "anno_" not in md
    assert "per annotator and then averaged" in md
    assert [r["key"] for r in summary.worst(rows, 2)] == ["b/1", "a/0"]


def test_summary_baseline_and_per_video_tables():
    rows = [
        {"key": "a/0", "video": "a", "J": 0.4, "F": 0.6, "JF": 0.5, "baseline_J": 0.2, "baseline_F": 0.4,
         "baseline_JF": 0.3, "category": "referring"},
        {"key": "b/0", "video": "b", "J": 0.8, "F": 1.0, "JF": 0.9, "baseline_J": 0.9, "baseline_F": 0.9,
         "baseline_JF": 0.9, "category": "reasoning"},
    ]
    s = summary.summarize("mevis", rows)
    assert s["overall"]["baseline"]["JF"] == pytest.approx(60.0)
    assert set(s["videos"]) == {"a", "b"} and s["videos"]["b"]["baseline"]["JF"] == pytest.approx(90.0)
    md = summary.to_markdown(s)
    assert "| overall | 60.0 | 80.0 | 70.0 | 60.0 | 2 |" in md
    assert "| video a | 40.0 | 60.0 | 50.0 | 30.0 | 1 |" in md
    assert "| category reasoning | 80.0 | 100.0 | 90.0 | 90.0 | 1 |" in md
    assert "first-frame baseline: the first frame's true mask copied to every frame" in md


def _refdavis_two_objects(root: Path) -> Path:
    """A flat Ref-DAVIS17 folder: one 3-frame video, objects 1 (left) and 2 (right) in a palette
    PNG, four expressions per object in ReferFormer's order (exp_id = 4 * object + annotator)."""
    from PIL import Image

    from videomolmo.masks import write_id_mask

    (root / "JPEGImages" / "v").mkdir(parents=True)
    ids = np.zeros((20, 40), np.uint8)
    ids[:, :20] = 1
    ids[:, 20:] = 2
    frames = ["00000", "00001", "00002"]
    for f in frames:
        Image.fromarray(np.full((20, 40, 3), 128, np.uint8)).save(root / "JPEGImages" / "v" / f"{f}.jpg")
        write_id_mask(root / "Annotations" / "v" / f"{f}.png", ids)
    exps = {str(4 * o + a): {"exp": f"object {o + 1} by annotator {a}", "obj_id": str(o + 1)}
            for o in range(2) for a in range(4)}
    (root / "meta_expressions.json").write_text(json.dumps({"videos": {"v": {"expressions": exps, "frames": frames}}}))
    return root


class _FakeResult:
    def __init__(self, mask, n):
        self.mask, self.n = mask, n
        self.points = {0: np.array([[5.0, 5.0]])}
        self.count = 1

    def masks(self, progress=None):
        for i in range(self.n):
            yield i, self.mask


class _FakePipe:
    """Object 1 predicted as columns 0-29 (10 columns too many), object 2 exactly right."""

    def __init__(self, sample):
        self.obj = int(sample.obj_ids[0])

    def __call__(self, video, query, **kw):
        m = np.zeros((20, 40), bool)
        if self.obj == 1:
            m[:, :30] = True
        else:
            m[:, 20:] = True
        return _FakeResult(m, len(video))



def test_refdavis_referformer_protocol_scores_the_combined_id_map(tmp_path: Path):
    from videomolmo.evaluation.runner import Evaluator, load_benchmark

    data = _refdavis_two_objects(tmp_path / "data")
    ds = load_benchmark("ref-davis17", data)
    units = make_units("ref-davis17", list(ds))
    assert [u.key for u in units] == ["v/anno_0", "v/anno_1", "v/anno_2", "v/anno_3"]
    run = tmp_path / "run"
    run.mkdir()
    ev = Evaluator("ref-davis17", run, _FakePipe)
    st = run_units(run, units, ev.process)
    assert st.complete
    rows = {r["key"]: r for r in read_all_rows(run).values()}
    # Object 1 wins the overlap (lower id, as ReferFormer's argmax): J = 20/30; object 2 keeps
    # only columns 30-39 of its perfect mask: J = 10/20.
    for a in range(4):
        assert rows[f"v/{a}"]["J"] == pytest.approx(20 / 30) and rows[f"v/{a}"]["annotator"] == a
        assert rows[f"v/{4 + a}"]["J"] == pytest.approx(10 / 20)
    from PIL import Image

    idmap = np.asarray(Image.open(run / "anno_2" / "v" / "00001.png"))
    assert (idmap[:, :30] == 1).all() and (idmap[:, 30:] == 2).all()
    # Per-expression predictions are kept as predicted (the submission layout), not made exclusive.
    pred = np.asarray(Image.open(run / "predictions" / "v" / "4" / "00000.png")) > 0
    assert pred[:, 20:].all()
    s = summary.summarize("ref-davis17", list(rows.values()))
    assert s["overall"]["masks"]["J"] == pytest.approx(100 * (20 / 30 + 10 / 20) / 2)


class _SwappedPipe(_FakePipe):
    """Predicts each object exactly, but the other one: the toolkit's matching undoes the swap."""

    def __init__(self, sample):
        self.obj = 3 - int(sample.obj_ids[0])

    def __call__(self, video, query, **kw):
        m = np.zeros((20, 40), bool)
        if self.obj == 1:
            m[:, :20] = True
        else:
            m[:, 20:] = True
        return _FakeResult(m, len(video))


def test_refdavis_matches_objects_like_the_davis_toolkit(tmp_path: Path):
    from videomolmo.evaluation.runner import Evaluator, load_benchmark

    data = _refdavis_two_objects(tmp_path / "data")
    units = make_units("ref-davis17", list(load_benchmark("ref-davis17", data)))
    run = tmp_path / "run"
    run.mkdir()
    run_units(run, units, Evaluator("ref-davis17", run, _SwappedPipe).process)
    rows = read_all_rows(run)
    assert all(r["J"] == pytest.approx(1.0) for r in rows.values())
    assert rows["v/0"]["matched_to"] == "4" and rows["v/4"]["matched_to"] == "0"


def test_bootstrap_ci_is_seeded_and_about_the_normal_interval():
    rng = np.random.default_rng(1)
    x = rng.random(1000) < 0.3
    ci = summary.bootstrap_ci(x.astype(float))
    assert ci == summary.bootstrap_ci(x.astype(float))  # reproducible
    half = 1.96 * np.sqrt(x.mean() * (1 - x.mean()) / x.size)
    assert ci[0] == pytest.approx(x.mean() - half, abs=0.01) and ci[1] == pytest.approx(x.mean() + half, abs=0.01)
    assert summary.bootstrap_ci([0.5] * 10) == [0.5, 0.5]
    assert summary.bootstrap_ci([1.0]) is None


def test_paired_difference_pairs_by_key_and_refuses_other_queries():
    from videomolmo.errors import DatasetError
    from videomolmo.evaluation.paired import paired_difference

    rng = np.random.default_rng(0)
    a = [{"key": f"v{i}/0", "expression": "q", "category": "motion", "F1": float(rng.random() < 0.3)} for i in range(400)]
    # B = A plus 80 more hits: a +0.2 difference that two unpaired CIs would blur.
    b = [dict(r) for r in a]
    flips = [i for i, r in enumerate(a) if r["F1"] == 0.0][:80]
    for i in flips:
        b[i]["F1"] = 1.0
    d = paired_difference(a, b, "F1", "motion")
    assert d["n"] == 400 and d["diff"] == pytest.approx(0.2)
    assert 0.15 < d["ci"][0] < 0.2 < d["ci"][1] < 0.25
    assert paired_difference(a, b[:10], "F1")["n"] == 10  # only the shared expressions
    assert paired_difference(a, b, "F1", "count")["n"] == 0
    b[0]["expression"] = "another query"
    with pytest.raises(DatasetError, match="different queries"):
        paired_difference(a, b, "F1")


def test_compare_runs_pools_several_folders_pairwise(tmp_path: Path):
    """Two seeds' runs of A and B: folder i pairs only with folder i, although the keys repeat."""
    from videomolmo.errors import DatasetError
    from videomolmo.evaluation.paired import compare_runs
    from videomolmo.files import JsonlLog

    def run(name, values):
        (tmp_path / name).mkdir()
        JsonlLog(tmp_path / name / "rows.jsonl").append(
            [{"key": f"0/{i}", "expression": f"q{i}", "category": "multi", "JF": v} for i, v in enumerate(values)])
        return tmp_path / name

    a0, b0 = run("a0", [0.0, 0.0, 0.0]), run("b0", [1.0, 1.0, 1.0])
    a1, b1 = run("a1", [1.0, 1.0]), run("b1", [1.0, 1.0])
    pooled = compare_runs([a0, a1], [b0, b1], metrics=("JF",))
    assert pooled["paired"] == 5 and pooled["unmatched"] == 0
    assert pooled["rows"][0]["diff"] == pytest.approx(3 / 5)  # crossed pairs would give other numbers
    assert compare_runs(a1, b0, metrics=("JF",))["rows"][0]["diff"] == 0.0  # one folder: keys as they are
    with pytest.raises(DatasetError, match="as many A folders"):
        compare_runs([a0, a1], [b0], metrics=("JF",))
