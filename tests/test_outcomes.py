"""What a result tells a person: the bundled model's limits, 'nothing found', confidences,
and progress as log lines when stderr is not a terminal (issue 14)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from videomolmo.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videomolmo.video import write_video

    d = tmp_path_factory.mktemp("outcomes")
    rng = np.random.default_rng(0)
    write_video(d / "noise.mp4", [rng.integers(0, 255, (64, 80, 3), dtype=np.uint8) for _ in range(6)], fps=6)
    (d / "none.json").write_text(json.dumps({"0": [], "3": []}))
    return d


def test_bundled_model_notice_on_cli_stderr_and_api_warning(clip):
    r = runner.invoke(app, ["count", str(clip / "noise.mp4"), "--query", "the dog", "--k", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert "note: the bundled model" in r.stderr and "--model DIR" in r.stderr
    assert r.stderr.count("note: the bundled model") == 1
    report = json.loads(r.stdout)
    # One confidence per point, each a probability.
    assert set(report["point_scores"]) == {"0", "3"}
    for frame, scores in report["point_scores"].items():
        assert len(scores) == report["per_frame"][frame]
        assert all(0.0 < s <= 1.0 for s in scores)

    from videomolmo.notices import BundledModelWarning
    from videomolmo.pipeline import Pipeline

    pipe = Pipeline.from_pretrained()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = pipe.point(str(clip / "noise.mp4"), "the dog", k=3)
    assert any(issubclass(w.category, BundledModelWarning) for w in caught)
    assert any("bundled model" in n for n in res.notes)
    # Synthetic input (demo, synthetic benchmark) is the model's own domain: no notice.
    pipe.synthetic_input = True
    assert pipe.notices() == []


def test_point_scores_follow_token_probabilities():
    from videomolmo.model.pointing import point_scores

    class Tok:
        def decode(self, ids):
            return "".join(ids)

    ids = ['<point x="', '10', '" y="', '20', '">a</point>', ' <point x="', '30', '" y="', '40', '">b</point>']
    probs = [0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5]
    s = point_scores(Tok(), ids, probs, 2)
    assert s == pytest.approx([0.9, 0.5])
    assert point_scores(Tok(), ["There are none."], [0.99], 0).shape == (0,)


def test_nothing_found_is_said_and_counts_zero(clip, tmp_path):
    out = tmp_path / "o"
    r = runner.invoke(app, ["track", str(clip / "noise.mp4"), "--query", "the red car", "--points",
                            str(clip / "none.json"), "--k", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "nothing found for 'the red car'" in r.stderr
    report = json.loads((out / "count.json").read_text())
    assert report["found"] is False and report["count"] == 0
    assert any("nothing found" in n for n in report["notes"])
    # Given points carry no confidence: the report does not invent one.
    assert "point_scores" not in report


def test_progress_is_log_lines_without_a_terminal(clip, tmp_path):
    # CliRunner's stderr is not a terminal, as when redirected to a log file.
    r = runner.invoke(app, ["track", str(clip / "noise.mp4"), "--query", "the dog", "--k", "3",
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert any(line.startswith("track: pointing 2/2 (100%)") for line in lines), lines
    assert any(line.startswith("track: masks 6/6 (100%)") for line in lines), lines


def test_log_lines_are_throttled_and_estimate_time():
    from rich.console import Console

    from videomolmo.cli.progress import LogLines

    con = Console(record=True, width=200)
    log = LogLines("x", interval=3600, console=con)
    for i in range(1, 11):
        log("masks", i, 10)
    log("masks", 10, 10)
    text = con.export_text(clear=False).splitlines()
    # First step (with a time estimate) and the last, once each; nothing in between.
    assert len(text) == 2 and "~" in text[0] and "left" in text[0] and text[1].startswith("x: masks 10/10 (100%)")
    log("masks", 1, 10)  # a new round (the next expression of an eval) reports again
    assert len(con.export_text(clear=False).splitlines()) == 3


def test_segment_overlay_and_contact_sheet(tmp_path):
    from PIL import Image

    from videomolmo.video import write_video

    frames = [np.full((60, 80, 3), (30, 60, 200), np.uint8) for _ in range(5)]
    for f in frames:
        f[20:40, 30:50] = (230, 230, 230)
    write_video(tmp_path / "v.mp4", frames, fps=25)
    (tmp_path / "p.json").write_text(json.dumps({"0": [[40, 30]]}))
    r = runner.invoke(app, ["segment", str(tmp_path / "v.mp4"), "--points", str(tmp_path / "p.json"), "--k", "5",
                            "--out", str(tmp_path / "m"), "--overlay", str(tmp_path / "seg.mp4")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "seg.mp4").stat().st_size > 0
    sheet = np.asarray(Image.open(tmp_path / "seg.png").convert("RGB"))
    assert sheet.shape[0] > 60 and len(list((tmp_path / "m").glob("*.png"))) == 5
    bad = runner.invoke(app, ["segment", str(tmp_path / "v.mp4"), "--points", str(tmp_path / "p.json"),
                              "--out", str(tmp_path / "m2"), "--overlay", str(tmp_path / "seg.gif")])
    assert bad.exit_code == 2 and ".mp4" in bad.stderr


def test_eval_prints_tables_baseline_and_summary_path_and_always_summarizes(tmp_path):
    """An unsharded eval with a unit that fails on bad input still writes its summary (of the
    rest), says where, and exits 2 with one line saying what failed."""
    from videomolmo import synth

    root = synth.write_dataset(tmp_path / "s", videos=2, seed=0, split="test", )
    run = tmp_path / "run"
    r = runner.invoke(app, ["eval", "synthetic", "--data", str(root), "--out", str(run), "--pointer", "oracle",
                            "--k", "4"])
    assert r.exit_code == 0, r.output
    md = (run / "summary.md").read_text()
    assert "first-frame baseline J&F" in md and "| video " in md, md
    assert f"summary: {run / 'summary.md'}" in r.stdout
    # Synthetic input is the bundled model's own domain: no out-of-domain note.
    assert "note: the bundled model" not in r.stderr

    # Break one frame of one video: that unit fails, the other is summarized.
    frame = sorted((root / "JPEGImages").iterdir())[0]
    victim = sorted(frame.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:40])
    run2 = tmp_path / "run2"
    r = runner.invoke(app, ["eval", "synthetic", "--data", str(root), "--out", str(run2), "--pointer", "oracle",
                            "--k", "4"])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("error:") and "failed on bad input" in err[-1] and "rerun" in err[-1], err
    assert (run2 / "summary.json").is_file() and "waiting for the other shards" not in r.output
