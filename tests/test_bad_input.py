"""Bad input across `track`, `point`, `count`, `eval` and `serve`: one-line error, exit code 2,
nothing half-written left looking complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videomolmo.cli import app

runner = CliRunner()

COMPLETE_MARKERS = ("points.jsonl", "count.json", "overlay.mp4", "masks", "summary.json", "rows.jsonl")


def _run(args):
    return runner.invoke(app, [str(a) for a in args])


def _assert_one_line_error(result, *needles: str):
    out = result.output.strip()
    assert result.exit_code == 2, (result.exit_code, out, result.exception)
    assert len(out.splitlines()) == 1, out
    assert out.startswith("error:"), out
    assert "Traceback" not in out
    for n in needles:
        assert n.lower() in out.lower(), (n, out)


def _nothing_complete(folder: Path):
    if not folder.exists():
        return
    names = {p.name for p in folder.iterdir()}
    assert not names & set(COMPLETE_MARKERS), names


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import av

    from videomolmo.video import write_video

    d = tmp_path_factory.mktemp("bad")
    frames = [np.full((48, 64, 3), 20 * t, np.uint8) for t in range(6)]
    write_video(d / "ok.mp4", frames, fps=5)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    (d / "notes.txt").write_text("not a video\n")
    c = av.open(str(d / "zero.mp4"), "w")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    for p in s.encode(None):
        c.mux(p)
    c.close()
    (d / "empty_frames").mkdir()
    (d / "not_a_checkpoint").mkdir()
    (d / "not_a_checkpoint" / "readme.txt").write_text("hello")
    (d / "a_file").write_text("x")
    return d


VIDEO_CASES = [
    ("missing.mp4", "missing"),
    ("corrupt.mp4", "corrupt"),
    ("zero.mp4", "zero"),
    ("empty_frames", "empty_frames"),
    ("notes.txt", "notes.txt"),
]


@pytest.mark.parametrize("cmd", ["track", "point", "count"])
@pytest.mark.parametrize("name,needle", VIDEO_CASES)
def test_bad_video(files, tmp_path, cmd, name, needle):
    out = tmp_path / "out"
    args = [cmd, files / name, "--query", "the dog"] + (["--out", out] if cmd != "count" else [])
    _assert_one_line_error(_run(args), needle)
    _nothing_complete(out)


@pytest.mark.parametrize("cmd", ["track", "point", "count"])
@pytest.mark.parametrize("query,needle", [("", "empty"), ("   \t ", "empty"), ("x" * 10_000, "10000 characters")])
def test_bad_query(files, tmp_path, cmd, query, needle):
    out = tmp_path / "out"
    args = [cmd, files / "ok.mp4", "--query", query] + (["--out", out] if cmd != "count" else [])
    _assert_one_line_error(_run(args), needle)
    _nothing_complete(out)


@pytest.mark.parametrize("opt,val,needle", [("--k", "0", "k must"), ("--k", "-3", "k must"),
                                            ("--tau", "1.5", "tau"), ("--tau", "-0.1", "tau")])
def test_bad_k_tau(files, tmp_path, opt, val, needle):
    out = tmp_path / "out"
    _assert_one_line_error(_run(["track", files / "ok.mp4", "--query", "the dog", "--out", out, opt, val]), needle)
    _nothing_complete(out)


def test_unwritable_output_dir(files):
    # Below a regular file: no user (not even root) can create it.
    _assert_one_line_error(_run(["track", files / "ok.mp4", "--query", "the dog", "--out", files / "a_file" / "out"]),
                           "not writable")
    _assert_one_line_error(_run(["point", files / "ok.mp4", "--query", "the dog", "--out", files / "a_file"]),
                           "is not a folder")


@pytest.mark.parametrize("cmd", ["track", "point", "count"])
def test_model_dir_not_a_checkpoint(files, tmp_path, cmd):
    out = tmp_path / "out"
    args = [cmd, files / "ok.mp4", "--query", "the dog", "--model", files / "not_a_checkpoint"]
    args += ["--out", out] if cmd != "count" else []
    _assert_one_line_error(_run(args), "not a checkpoint")
    _nothing_complete(out)


def test_model_preset_without_weights_and_missing_model(files, tmp_path):
    _assert_one_line_error(_run(["count", files / "ok.mp4", "--query", "dogs", "--model", "videomolmo-7b"]),
                           "preset")
    _assert_one_line_error(_run(["count", files / "ok.mp4", "--query", "dogs", "--model", tmp_path / "nope"]),
                           "no such checkpoint")


@pytest.mark.slow
def test_unicode_query_and_paths_work_for_track_point_count(files, tmp_path):
    """Unicode is not bad input: a non-ASCII query, file name and output folder all work, and
    the success path writes every file (bundled model, loaded once for the three commands)."""
    import shutil

    src = tmp_path / "vidéo 日本.mp4"
    shutil.copy(files / "ok.mp4", src)
    query = "le chien qui court 🐕 über die Straße"
    out = tmp_path / "sortie ü"
    r = _run(["track", src, "--query", query, "--out", out, "--k", "3"])
    assert r.exit_code == 0, r.output
    assert list(json.loads((out / "points.jsonl").read_text(encoding="utf-8"))) == ["0", "3"]
    assert len(list((out / "masks").glob("*.png"))) == 6 and (out / "overlay.mp4").stat().st_size > 0
    assert json.loads((out / "count.json").read_text())["query"] == query
    r = _run(["point", src, "--query", query, "--k", "2"])
    assert r.exit_code == 0 and list(json.loads(r.stdout)) == ["0", "2", "4"]
    r = _run(["count", src, "--query", query, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["sampled_frames"] == [0, 5]
    # The Molmo+SAM2 baseline points on the first frame only, unless told to use every k.
    r = _run(["point", src, "--query", query, "--baseline", "--k", "2"])
    assert r.exit_code == 0 and list(json.loads(r.stdout)) == ["0"]
    r = _run(["point", src, "--query", query, "--baseline", "--every-k", "--k", "2"])
    assert r.exit_code == 0 and list(json.loads(r.stdout)) == ["0", "2", "4"]


# --------------------------------------------------------------------------- eval


def test_eval_bad_inputs(files, tmp_path):
    out = tmp_path / "run"
    data = files / "empty_frames"
    _assert_one_line_error(_run(["eval", "no-such-bench", "--data", data, "--out", out]), "unknown benchmark")
    _assert_one_line_error(_run(["eval", "mevis", "--data", files / "missing", "--out", out]), "does not exist")
    _assert_one_line_error(_run(["eval", "mevis", "--data", data, "--out", out]), "meta_expressions.json")
    _assert_one_line_error(_run(["eval", "mevis", "--data", data, "--out", out, "--k", "0"]), "k must")
    _assert_one_line_error(_run(["eval", "mevis", "--data", data, "--out", out, "--tau", "2"]), "tau")
    _assert_one_line_error(_run(["eval", "mevis", "--data", data, "--out", out, "--shard", "3/2"]), "shard")
    _assert_one_line_error(_run(["eval", "mevis", "--data", data, "--out", out, "--pointer", "psychic"]), "pointer")
    _nothing_complete(out)


def test_eval_unwritable_run_dir_and_bad_model(files, tmp_path):
    from videomolmo import synth

    root = synth.write_dataset(tmp_path / "synth", videos=1, seed=0, split="test")
    _assert_one_line_error(_run(["eval", "synthetic", "--data", root, "--out", files / "a_file" / "run"]),
                           "not writable")
    out = tmp_path / "run"
    _assert_one_line_error(_run(["eval", "synthetic", "--data", root, "--out", out,
                                 "--model", files / "not_a_checkpoint"]), "not a checkpoint")
    _nothing_complete(out)


# --------------------------------------------------------------------------- serve


def test_serve_bad_options(files):
    pytest.importorskip("gradio")
    _assert_one_line_error(_run(["serve", "--port", "70000"]), "port")
    _assert_one_line_error(_run(["serve", "--max-upload-mb", "0"]), "max-upload-mb")
    _assert_one_line_error(_run(["serve", "--model", files / "not_a_checkpoint"]), "not a checkpoint")


def test_sam2_backend_needs_a_checkpoint_dir(files, tmp_path):
    args = ["track", files / "ok.mp4", "--query", "the dog", "--out", tmp_path / "o", "--mask-backend", "sam2"]
    _assert_one_line_error(_run(args), "--mask-checkpoint")
    _assert_one_line_error(_run(args + ["--mask-checkpoint", tmp_path / "nope"]), "does not exist")
    _assert_one_line_error(_run(args + ["--sam2", tmp_path / "nope"]), "does not exist")  # the deprecated alias
    _assert_one_line_error(_run(args[:-2] + ["--mask-backend", "magic"]), "unknown mask backend")

