"""Molmo2 as a stage-1 pointer: answer parsing on hand-written outputs (well-formed and broken),
timestamp-to-frame mapping, loading a tiny random native `Molmo2ForConditionalGeneration` folder
and its errors, and the `track` / `point` / `count` commands with `--pointer molmo2`.

Random weights answer gibberish, so the end-to-end tests that check coordinates constrain the
real model's `generate` to a hand-written answer with a logits processor: the prompt building,
the forward passes, decoding and parsing are all the real code paths.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from videomolmo.errors import CheckpointError, ConfigError  # noqa: E402
from videomolmo.pointers.molmo2 import (  # noqa: E402
    Molmo2OutputError,
    Molmo2Point,
    Molmo2Pointer,
    parse_video_points,
    points_to_frames,
    save_tiny_molmo2,
)

H, W = 40, 50


# ----------------------------------------------------------------------------- parsing


def test_parses_points_with_timestamps_and_ids():
    text = 'Sure. <points coords="0.0 1 500 250 2 100 900;0.2 1 520 260">the dogs</points>'
    pts, problems = parse_video_points(text, W, H)
    assert problems == []
    assert pts == [Molmo2Point(0.0, 1, 25.0, 10.0), Molmo2Point(0.0, 2, 5.0, 36.0),
                   Molmo2Point(0.2, 1, 26.0, 10.4)]


def test_parses_tracks_tabs_commas_and_several_tags():
    text = ('<tracks coords="1.5 3 000 1000\t2.0 3 010 990"/> and '
            '<points alt="x" coords="2.5 4 500 500, 3.0 4 501 501">cat</points>')
    pts, problems = parse_video_points(text, 1000, 1000)
    assert problems == []
    assert [(p.time, p.obj_id, p.x, p.y) for p in pts] == [
        (1.5, 3, 0.0, 1000.0), (2.0, 3, 10.0, 990.0), (2.5, 4, 500.0, 500.0), (3.0, 4, 501.0, 501.0)]


@pytest.mark.parametrize("text", ["", "There are no dogs in this video.", "<points>", "coords=\"1 2 3\""])
def test_no_points_is_an_empty_answer(text):
    pts, _ = parse_video_points(text, W, H)
    assert pts == []


@pytest.mark.parametrize("text, what", [
    ('<points coords="0.5 1 500">x</points>', "not 'time id x y"),
    ('<points coords="0.5 1 500 abc">x</points>', "non-numeric"),
    ('<points coords="0.5 1 1500 200">x</points>', "outside 0..1000"),
    ('<points coords="0.5 1.5 500 200">x</points>', "outside 0..1000"),
    ('<points label="no coords">x</points>', "without coords"),
    ('<points coords="-1 1 500 200">x</points>', "bad timestamp"),
    ('<points coords="0.5">x</points>', "not 'time id x y"),
])
def test_malformed_answers_are_skipped_with_a_reason_or_raise_when_strict(text, what):
    pts, problems = parse_video_points(text, W, H)
    assert pts == [] and len(problems) == 1 and what in problems[0]
    with pytest.raises(Molmo2OutputError, match="unreadable Molmo2 output"):
        parse_video_points(text, W, H, strict=True)


def test_good_groups_survive_a_bad_one():
    pts, problems = parse_video_points('<points coords="0.0 1 500 500;0.5 1 50;1.0 2 100 100">', W, H)
    assert [p.obj_id for p in pts] == [1, 2] and len(problems) == 1


def test_non_text_output_is_a_clear_error():
    with pytest.raises(Molmo2OutputError, match="must be text"):
        parse_video_points(None, W, H)  # type: ignore[arg-type]


def test_timestamps_map_to_the_nearest_prompted_frame():
    # 24 fps, anchors every 5 frames: the prompt prints 0.0, 0.2, 0.4 (one decimal).
    pts = [Molmo2Point(0.2, 1, 1, 1), Molmo2Point(0.4, 1, 2, 2), Molmo2Point(0.0, 2, 3, 3),
           Molmo2Point(7.0, 1, 4, 4)]
    by_frame, problems = points_to_frames(pts, [0, 5, 10], 24.0)
    assert {i: [p.x for p in ps] for i, ps in by_frame.items()} == {0: [3], 5: [1], 10: [2]}
    assert len(problems) == 1 and "7s is outside" in problems[0]
    assert points_to_frames(pts, [], 24.0) == ({}, [])


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return save_tiny_molmo2(tmp_path_factory.mktemp("molmo2") / "tiny")


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (12, H, W, 3), dtype=np.uint8)


class _Force:
    """Logits processor forcing each generate call to emit the next of `answers`, then EOS."""

    def __init__(self, tokenizer, answers):
        self.targets = [tokenizer.encode(a, add_special_tokens=False) + [tokenizer.eos_token_id] for a in answers]
        self.start = None
        self.prev = None

    def __call__(self, input_ids, scores):
        n = input_ids.shape[1]
        if self.prev is None:
            self.start = n
        elif n <= self.prev:  # the sequence got shorter: the next generate call began
            self.targets.pop(0)
            self.start = n
        self.prev = n
        target = self.targets[0]
        step = min(n - self.start, len(target) - 1)
        forced = torch.full_like(scores, -float("inf"))
        forced[:, target[step]] = 0.0
        return forced


def _forced_pointer(ckpt, answers, **kwargs):
    from transformers import LogitsProcessorList

    pointer = Molmo2Pointer.from_pretrained(ckpt, max_new_tokens=200, **kwargs)
    pointer.generate_kwargs = {"logits_processor": LogitsProcessorList([_Force(pointer.tokenizer, answers)])}
    return pointer


def test_loads_native_classes_and_one_forward(ckpt, video):
    from transformers import Molmo2ForConditionalGeneration

    p = Molmo2Pointer.from_pretrained(ckpt, max_new_tokens=4)
    assert isinstance(p.model, Molmo2ForConditionalGeneration)
    inputs = p.build_inputs(video[[0, 5]], [0.0, 5 / 24], "the dog")
    text = p.tokenizer.decode(inputs["input_ids"][0])
    # The processor's layout: each frame's timestamp (one decimal) before its patch block.
    assert "0.0 <frame_start>" in text and " 0.2 <frame_start>" in text and "Point to the dog." in text
    assert int(inputs["mm_token_type_ids"].sum()) == int(
        torch.isin(inputs["input_ids"], torch.tensor(p.tokenizer.convert_tokens_to_ids(
            ["<im_patch>", "<frame_start>", "<frame_end>"]))).sum())
    with torch.inference_mode():
        out = p.model(**inputs)
    assert out.logits.shape[:2] == inputs["input_ids"].shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gibberish answers warn only if they contain broken tags
        got = p.point(video, "the dog", [0, 5, 10])
    assert sorted(got) == [0, 5, 10] and all(v.shape[1] == 2 for v in got.values())


def test_questions_are_asked_as_is_expressions_go_into_the_template(ckpt):
    p = Molmo2Pointer.from_pretrained(ckpt)
    assert p.prompt_for("the dog on the left") == "Point to the dog on the left."
    assert p.prompt_for("how many birds are there?") == "how many birds are there?"


def test_forced_answer_becomes_per_frame_points_with_ids(ckpt, video):
    # A bare array plays at 30 fps: anchors 0, 5, 10 are printed 0.0, 0.2, 0.3.
    answer = '<points coords="0.0 1 500 500 2 100 200;0.3 1 520 500">the dogs</points>'
    p = _forced_pointer(ckpt, [answer])
    got = p.point(video, "the dogs", [0, 5, 10])
    np.testing.assert_allclose(got[0], [[25.0, 20.0], [5.0, 8.0]])
    assert got[5].shape == (0, 2)
    np.testing.assert_allclose(got[10], [[26.0, 20.0]])
    assert p.point_ids[0] == [(1, 25.0, 20.0), (2, 5.0, 8.0)] and p.last_answers == [answer]


def test_frames_are_chunked_per_generate_call(ckpt, video):
    answers = ['<points coords="0.0 1 500 500">a</points>', '<points coords="0.3 1 100 100">a</points>']
    p = _forced_pointer(ckpt, answers, frames_per_call=2)
    got = p.point(video, "a", [0, 5, 10])
    assert len(p.last_answers) == 2
    assert len(got[0]) == 1 and len(got[5]) == 0 and len(got[10]) == 1


def test_malformed_model_answer_warns_and_yields_no_points(ckpt, video):
    p = _forced_pointer(ckpt, ['<points coords="0.0 1 5000 20">a</points>'])
    with pytest.warns(UserWarning, match="outside 0..1000"):
        got = p.point(video, "a", [0, 5])
    assert all(len(v) == 0 for v in got.values())


def test_loader_errors(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Molmo2Pointer.from_pretrained(tmp_path / "nope")
    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "sam2_video"}))
    with pytest.raises(CheckpointError, match="model_type is 'sam2_video'"):
        Molmo2Pointer.from_pretrained(bad)
    (bad / "config.json").write_text(json.dumps(cfg))
    w = bad / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        Molmo2Pointer.from_pretrained(bad)
    w.write_bytes(data)
    (bad / "tokenizer.json").unlink()
    (bad / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer"):
        Molmo2Pointer.from_pretrained(bad)
    notemplate = tmp_path / "nt"
    shutil.copytree(ckpt, notemplate)
    (notemplate / "chat_template.jinja").unlink()
    tc = json.loads((notemplate / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (notemplate / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(CheckpointError, match="no chat template"):
        Molmo2Pointer.from_pretrained(notemplate)
    with pytest.raises(ConfigError, match="must contain"):
        Molmo2Pointer.from_pretrained(ckpt, prompt="Point.")


# ----------------------------------------------------------------------------- CLI


@pytest.fixture()
def frames_dir(video, tmp_path) -> Path:
    import cv2

    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(video):
        cv2.imwrite(str(d / f"{i:05d}.png"), f[:, :, ::-1])
    return d


def test_cli_track_point_count_with_molmo2(ckpt, frames_dir, tmp_path):
    from typer.testing import CliRunner

    from videomolmo.cli import app

    run = CliRunner().invoke
    out = tmp_path / "out"
    r = run(app, ["track", str(frames_dir), "-q", "the dog", "--out", str(out), "--pointer", "molmo2",
                  "--model", str(ckpt), "--no-overlay", "--k", "4"])
    assert r.exit_code == 0, r.output
    assert len(list((out / "masks").glob("*.png"))) == 12
    assert sorted(json.loads((out / "points.jsonl").read_text())) == ["0", "4", "8"]
    r = run(app, ["point", str(frames_dir), "-q", "the dog", "--pointer", "molmo2", "--model", str(ckpt)])
    assert r.exit_code == 0, r.output
    assert sorted(json.loads(r.stdout), key=int) == ["0", "5", "10"]
    r = run(app, ["count", str(frames_dir), "-q", "the dog", "--pointer", "molmo2", "--model", str(ckpt), "--json"])
    assert r.exit_code == 0 and "count" in json.loads(r.stdout)
    r = run(app, ["point", str(frames_dir), "-q", "x", "--pointer", "molmo2"])
    assert r.exit_code == 2 and "needs --model DIR" in r.output
    r = run(app, ["point", str(frames_dir), "-q", "x", "--pointer", "molmo2", "--model", str(tmp_path / "none")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = run(app, ["point", str(frames_dir), "-q", "x", "--pointer", "gpt"])
    assert r.exit_code == 2 and "unknown pointer 'gpt'" in r.output and "molmo2" in r.output
