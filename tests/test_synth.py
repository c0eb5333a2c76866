import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from videomolmo.cli import app
from videomolmo.errors import ConfigError
from videomolmo.synth import (ABSENT_ANSWER, KINDS, SynthConfig, clip_rng, generate_clip,
                              write_dataset)


def test_same_seed_same_clip_and_splits_differ():
    a = generate_clip(clip_rng(7, "train", 3))
    b = generate_clip(clip_rng(7, "train", 3))
    c = generate_clip(clip_rng(7, "test", 3))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert [e.text for e in a.expressions] == [e.text for e in b.expressions]
    assert not np.array_equal(a.frames, c.frames)


def test_clip_contracts_occlusion_and_points():
    cfg = SynthConfig(frames=6)
    for i in range(20):
        clip = generate_clip(clip_rng(1, "train", i), cfg)
        T, H, W, C = clip.frames.shape
        assert (T, H, W, C) == (6, 112, 112, 3) and clip.frames.dtype == np.uint8
        assert clip.masks.dtype == bool and clip.masks.shape == (len(clip.sprites), 6, 112, 112)
        assert 2 <= len(clip.sprites) <= 8
        # Visible masks never overlap: later sprites occlude earlier ones.
        assert clip.masks.sum(axis=0).max() <= 1
        for k in range(len(clip.sprites)):
            for t in range(T):
                p = clip.points[k][t]
                if clip.masks[k, t].any():
                    assert clip.masks[k, t][int(p[1]), int(p[0])], "GT point must lie on the mask"
                else:
                    assert p is None


def test_expression_semantics():
    seen = set()
    for i in range(60):
        clip = generate_clip(clip_rng(2, "train", i))
        sp = clip.sprites
        for e in clip.expressions:
            seen.add(e.kind)
            if e.kind == "absent":
                assert e.obj_ids == []
                colour, shape = e.text.split()[1:3]
                assert not any(s.colour == colour and s.shape == shape for s in sp)
            elif e.kind in ("motion", "still"):
                (k,) = e.obj_ids
                assert (sp[k].motion == "still") == (e.kind == "still")
                twins = [s for s in sp if (s.colour, s.shape, s.radius) == (sp[k].colour, sp[k].shape, sp[k].radius)]
                # identical look, so only the motion tells them apart
                assert len(twins) >= 2
                assert [s.motion for s in twins].count(sp[k].motion) == 1
                # the sprite and a look-alike are both in the target (last) frame
                assert clip.points[k][-1] is not None
                assert sum(clip.points[s.obj_id][-1] is not None for s in twins) >= 2
            elif e.kind == "appearance":
                (k,) = e.obj_ids
                assert sum(s.colour == sp[k].colour and s.shape == sp[k].shape for s in sp) == 1
            elif e.kind == "count":
                shape = e.text.split()[2][:-1]
                assert sorted(e.obj_ids) == [s.obj_id for s in sp if s.shape == shape]
            elif e.kind == "multi":
                colour = e.text.split()[1]
                assert sorted(e.obj_ids) == [s.obj_id for s in sp if s.colour == colour]
                assert len(e.obj_ids) >= 2
    assert seen == set(KINDS)
    assert ABSENT_ANSWER == "There are none."


def test_motion_speed_is_about_a_patch_window_over_context():
    cfg = SynthConfig()
    for i in range(10):
        for s in generate_clip(clip_rng(3, "train", i), cfg).sprites:
            if s.motion != "still":
                assert 14 <= 4 * s.speed <= 28


def test_written_dataset_round_trips(tmp_path):
    cfg = SynthConfig(frames=5)
    root = write_dataset(tmp_path / "ds", 3, seed=4, split="val", config=cfg)
    meta = json.loads((root / "meta_expressions.json").read_text())
    masks = json.loads((root / "mask_dict.json").read_text())
    points = json.loads((root / "points.json").read_text())
    assert len(meta["videos"]) == 3
    for i, (vid, v) in enumerate(meta["videos"].items()):
        clip = generate_clip(clip_rng(4, "val", i), cfg)
        assert len(list((root / "JPEGImages" / vid).glob("*.jpg"))) == 5 == len(v["frames"])
        for e in v["expressions"].values():
            assert e["kind"] in KINDS and len(e["obj_id"]) == len(e["anno_id"])
            for o, a in zip(e["obj_id"], e["anno_id"]):
                for t, rle in enumerate(masks[str(a)]):
                    if rle is None:
                        assert not clip.masks[o, t].any()
                        assert points[vid][str(o)][t] is None
                    else:
                        m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                        assert np.array_equal(m.astype(bool), clip.masks[o, t])
    # A second run over the same folder (resume) leaves identical metadata.
    before = (root / "meta_expressions.json").read_text()
    write_dataset(tmp_path / "ds", 3, seed=4, split="val", config=cfg)
    assert (root / "meta_expressions.json").read_text() == before


def test_cli_synth_and_bad_input(tmp_path):
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "d"), "--videos", "2", "--frames", "4",
                                 "--split", "test"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "d" / "JPEGImages").iterdir())) == 2
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "e"), "--split", "holdout"])
    assert r.exit_code == 2 and "holdout" in r.output
    with pytest.raises(ConfigError):
        SynthConfig(size=8)


def test_motion_queries_are_clean_on_the_motion_preset():
    """Issue 11: no motion-only query about a sprite that has left the frame, and none about
    the still sprite (its own kind)."""
    cfg = SynthConfig.from_name("motion", frames=5)
    kinds = {}
    for i in range(150):
        clip = generate_clip(clip_rng(0, "test", i), cfg)
        for e in clip.expressions:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
            if e.kind == "motion":
                assert clip.sprites[e.obj_ids[0]].motion != "still"
                assert clip.target_points(e.obj_ids, 4).shape == (1, 2)
    assert kinds["motion"] > 80 and kinds.get("still", 0) > 5
    # Legacy 5-weight configs still work (no still queries).
    assert SynthConfig(kind_weights=(1, 0, 0, 0, 0)).kind_weights[-1] == 0.0


def test_hard_absent_names_a_present_colour_in_an_absent_shape():
    """`hard_absent`: absent queries whose colour is in the clip, so only the shape says
    "none". (At 0, every preset but `shape-text`, it draws no random number: the eval, few,
    default and motion streams hashed identically before and after it was added.)"""
    def absent_colours_present(cfg, n=120):
        hits = total = 0
        for i in range(n):
            clip = generate_clip(clip_rng(3, "train", i), cfg)
            looks = {(sp.colour, sp.shape) for sp in clip.sprites}
            colours = {c for c, _ in looks}
            for e in clip.expressions:
                if e.kind == "absent":
                    _, c, sh = e.text.split()
                    assert (c, sh) not in looks and e.obj_ids == []
                    total += 1
                    hits += c in colours
        return hits / max(total, 1), total

    hard, n_hard = absent_colours_present(SynthConfig.from_name("shape-text"))
    easy, _ = absent_colours_present(SynthConfig.from_name("few"))
    assert n_hard > 40 and hard > 0.8 > easy + 0.2
    with pytest.raises(ConfigError):
        SynthConfig(hard_absent=1.5)


def test_count_preset_asks_mostly_counting_queries_over_larger_groups():
    from collections import Counter

    def draw(name):
        rng, kinds, sizes = np.random.default_rng(0), Counter(), []
        for _ in range(150):
            clip = generate_clip(rng, SynthConfig.from_name(name, frames=5))
            for e in clip.expressions:
                kinds[e.kind] += 1
                if e.kind == "count":
                    sizes.append(len(clip.target_points(e.obj_ids, 4)))
        return kinds, sum(n >= 3 for n in sizes)

    kinds, big = draw("count")
    eval_kinds, eval_big = draw("eval")
    assert kinds["count"] > 0.5 * sum(kinds.values()) > 0
    assert eval_kinds["count"] < 0.3 * sum(eval_kinds.values())
    assert big > 2 * eval_big  # groups of 3 and more to count, from the same number of clips
    assert kinds["absent"] == 0
