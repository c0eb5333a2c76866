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



# --------------------------------------------------------------------------- issue 14 sweep


def _png_bomb(path: Path, w: int = 100_000, h: int = 100_000) -> None:
    """A small PNG whose header claims w x h pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from PIL import Image

    from videomolmo import synth

    d = tmp_path_factory.mktemp("sweep")
    frames = d / "bomb_frames"
    frames.mkdir()
    for i in range(4):
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(frames / f"{i:05d}.png")
    _png_bomb(frames / "00002.png")
    (d / "a_file").write_text("x")
    (d / "pts.json").write_text(json.dumps({"0": [[10, 10]]}))
    (d / "deep.json").write_text("[" * 5000 + "]" * 5000)
    cut = b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":"
    (d / "trunc_model").mkdir()
    (d / "trunc_model" / "model.safetensors").write_bytes(cut)
    (d / "trunc_model" / "config.json").write_text("{}")
    (d / "trunc.safetensors").write_bytes(cut)
    # A complete header whose tensor data was cut short (a partial copy).
    header = json.dumps({"w": {"dtype": "F32", "shape": [256], "data_offsets": [0, 1024]}}).encode()
    (d / "short.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 100)
    syn = synth.write_dataset(d / "synth", videos=2, seed=0, split="test")
    gone = synth.write_dataset(d / "synth_gone", videos=2, seed=0, split="test")
    import shutil

    shutil.rmtree(next((gone / "JPEGImages").iterdir()))
    # Predictions with a bomb frame for eval-masks.
    pred = d / "pred"
    meta = json.loads((syn / "meta_expressions.json").read_text())["videos"]
    vid, info = next(iter(meta.items()))
    exp = next(iter(info["expressions"]))
    (pred / vid / exp).mkdir(parents=True)
    _png_bomb(pred / vid / exp / f"{info['frames'][0]}.png")
    return {"d": d, "frames": frames, "synth": syn, "synth_gone": gone, "pred": pred}


BAD = {
    "probe --decode, bomb frame": (["probe", "{frames}", "--decode"], "DecompressionBomb"),
    "track, bomb frame": (["track", "{frames}", "--query", "x", "--points", "{d}/pts.json", "--k", "2",
                           "--out", "{d}/o_track"], "00002.png"),
    "segment, bomb frame": (["segment", "{frames}", "--points", "{d}/pts.json", "--out", "{d}/o_seg"], "00002.png"),
    "eval-masks, bomb prediction": (["eval-masks", "--data", "{synth}", "--pred", "{pred}", "--workers", "1"],
                                    "mask PNG"),
    "segment --out is a file": (["segment", "{frames}", "--points", "{d}/pts.json", "--out", "{d}/a_file"],
                                "not a folder"),
    "eval-baseline --out is a file": (["eval-baseline", "--data", "{synth}", "--out", "{d}/a_file"], "not a folder"),
    "train --out is a file": (["train", "--out", "{d}/a_file", "--steps", "1"], "not a folder"),
    "synth --out is a file": (["synth", "--out", "{d}/a_file", "--videos", "1"], "not a folder"),
    "demo --out is a file": (["demo", "--out", "{d}/a_file"], "not a folder"),
    "pretrain-vision --out is a file": (["pretrain-vision", "--out", "{d}/a_file", "--steps", "1"], "not a folder"),
    "train --init truncated": (["train", "--out", "{d}/t1", "--steps", "1", "--init", "{d}/trunc_model"],
                               "truncated"),
    "train --init-vision truncated": (["train", "--out", "{d}/t2", "--steps", "1", "--init-vision",
                                       "{d}/trunc.safetensors"], "truncated"),
    "train --init-vision data cut short": (["train", "--out", "{d}/t2b", "--steps", "1", "--init-vision",
                                            "{d}/short.safetensors"], "truncated"),
    "pretrain-vision --init truncated": (["pretrain-vision", "--out", "{d}/t3", "--steps", "1", "--init",
                                          "{d}/trunc.safetensors"], "truncated"),
    "pretrain-vision --steps -1": (["pretrain-vision", "--out", "{d}/t4", "--steps", "-1"], "--steps"),
    "segment, 5000-deep points JSON": (["segment", "{frames}", "--points", "{d}/deep.json", "--out", "{d}/o3"],
                                       "nested too deeply"),
    "track, 5000-deep points JSON": (["track", "{frames}", "--query", "x", "--points", "{d}/deep.json",
                                      "--out", "{d}/o4"], "nested too deeply"),
    "serve --device cuda:7": (["serve", "--device", "cuda:7"], "cuda"),
    "track --device cuda:7": (["track", "{frames}", "--query", "x", "--out", "{d}/o5", "--device", "cuda:7"],
                              "cuda"),
    "eval --mask-backend sam2 without checkpoint": (["eval", "synthetic", "--data", "{synth}", "--out", "{d}/e1",
                                                     "--mask-backend", "sam2"], "--mask-checkpoint"),
    "eval, metadata names a video not on disk": (["eval", "synthetic", "--data", "{synth_gone}", "--out", "{d}/e2",
                                                  "--points-only"], "not on disk"),
    "serve --max-frames 0": (["serve", "--max-frames", "0"], "--max-frames"),
    "error text keeps square brackets": (["probe", "{d}/clip[1].mp4"], "clip[1].mp4"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_issue14_bad_input_sweep(sweep, name):
    """Each bad input of the issue-14 sweep: exit 2, one plain line on stderr, no traceback."""
    if name.startswith("serve"):
        pytest.importorskip("gradio")
    args, needle = BAD[name]
    r = _run([a.format(**sweep) for a in args])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    err = r.stderr.strip().splitlines()
    assert err and err[-1].startswith("error:") and needle.lower() in err[-1].lower(), r.stderr
    assert sum(line.startswith("error:") for line in err) == 1
    assert "Traceback" not in r.output


def test_eval_masks_json_into_a_new_folder_succeeds(sweep, tmp_path):
    # Was a traceback after scoring; the folder is now made (and checked) before scoring.
    from videomolmo import synth

    root = synth.write_dataset(tmp_path / "s", videos=1, seed=0, split="test")
    target = tmp_path / "new" / "deeper" / "scores.json"
    r = _run(["eval-baseline", "--data", root, "--json", target, "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "J&F" in json.dumps(json.loads(target.read_text()))
    r = _run(["eval-baseline", "--data", root, "--json", tmp_path, "--workers", "1"])
    _assert_one_line_error(r, "is a folder")


def test_train_over_an_existing_run_needs_resume(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "log.jsonl").write_text("")
    _assert_one_line_error(_run(["train", "--out", run, "--steps", "1"]), "--resume")


def test_resume_refuses_a_truncated_optimizer_file(tmp_path):
    ck = tmp_path / "run" / "checkpoints" / "step-1"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text("{}")
    (ck.parent / "latest").write_text("step-1")
    (ck / "optimizer.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    _assert_one_line_error(_run(["train", "--out", tmp_path / "run", "--steps", "1", "--resume"]),
                           "optimizer.safetensors")


def test_segment_rerun_after_a_bad_frame_is_removed(tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        Image.fromarray(np.full((48, 64, 3), 60 * i, np.uint8)).save(frames / f"{i:05d}.jpg")
    good = (frames / "00002.jpg").read_bytes()
    (frames / "00002.jpg").write_bytes(good[: len(good) // 3])  # truncated
    pts = tmp_path / "pts.json"
    pts.write_text(json.dumps({"0": [[20, 20]]}))
    out = tmp_path / "out"
    first = _run(["segment", frames, "--points", pts, "--out", out, "--k", "4"])
    assert first.exit_code == 2 and "00002" in first.stderr, first.output
    (frames / "00002.jpg").unlink()
    again = _run(["segment", frames, "--points", pts, "--out", out, "--k", "4"])
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00003.png"]
