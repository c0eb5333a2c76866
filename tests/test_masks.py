"""Mask I/O: DAVIS PNG modes and object ids, COCO RLE, submission layout, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from videomolmo.errors import ConfigError, MaskError
from videomolmo.masks import (
    DAVIS_PALETTE,
    check_same_size,
    foreground,
    read_mask,
    resize_mask,
    rle_area,
    rle_decode,
    rle_encode,
    select_object,
    submission_path,
    write_id_mask,
    write_mask,
    write_submission_mask,
)
from conftest import DAVIS, needs_davis  # noqa: E402



def id_map(h: int = 20, w: int = 30) -> np.ndarray:
    ids = np.zeros((h, w), np.uint8)
    ids[2:8, 3:10] = 1
    ids[10:15, 5:25] = 2
    ids[16:19, 0:4] = 255  # 255 is an ordinary id in palette PNGs
    return ids


def runs_column_major(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE, computed directly: runs of 0s then 1s over the column-major scan."""
    flat = mask.flatten(order="F").astype(np.int8)
    runs, current, n = [], 0, 0
    for v in flat:
        if v == current:
            n += 1
        else:
            runs.append(n)
            current, n = v, 1
    runs.append(n)
    return runs


# --------------------------------------------------------------------------- DAVIS PNGs


def test_palette_png_ids_round_trip(tmp_path):
    ids = id_map()
    path = write_id_mask(tmp_path / "a" / "00000.png", ids)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert np.array_equal(np.array(im.getpalette()[:9]).reshape(3, 3), DAVIS_PALETTE[:3])
    raw = read_mask(path)
    assert raw.dtype == np.uint8 and np.array_equal(raw, ids)
    assert np.array_equal(read_mask(path, 2), ids == 2)
    assert np.array_equal(read_mask(path, "1"), ids == 1)
    assert np.array_equal(read_mask(path, 255), ids == 255)  # palette: 255 is just id 255
    assert np.array_equal(read_mask(path, [1, 2]), (ids == 1) | (ids == 2))
    assert np.array_equal(read_mask(path, "any"), ids != 0)
    assert np.array_equal(foreground(path), ids != 0)
    assert not read_mask(path, 7).any()


def test_davis_palette_values():
    assert DAVIS_PALETTE.shape == (256, 3)
    assert DAVIS_PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]


def test_l_mode_0_255_rule(tmp_path):
    m = np.zeros((10, 12), bool)
    m[2:6, 3:9] = True
    path = write_mask(tmp_path / "m.png", m)
    with Image.open(path) as im:
        assert im.mode == "L"
        assert set(np.unique(np.array(im)).tolist()) == {0, 255}
    assert set(np.unique(read_mask(path)).tolist()) == {0, 255}
    for oid in (1, "1", 255, "any", [1]):
        assert np.array_equal(read_mask(path, oid), m), oid
    assert not read_mask(path, 2).any()


def test_l_mode_multi_object_ids(tmp_path):
    ids = id_map()
    Image.fromarray(ids, mode="L").save(tmp_path / "l.png")
    # Not 0/255 only: plain equality, 1 is object 1 and 255 is object 255.
    assert np.array_equal(read_mask(tmp_path / "l.png", 1), ids == 1)
    assert np.array_equal(read_mask(tmp_path / "l.png", 255), ids == 255)


def test_other_modes(tmp_path):
    m = np.zeros((6, 8), bool)
    m[1:4, 2:5] = True
    Image.fromarray(m).save(tmp_path / "one.png")  # mode "1"
    assert np.array_equal(read_mask(tmp_path / "one.png", 1), m)
    ids = id_map()
    Image.fromarray(DAVIS_PALETTE[ids]).save(tmp_path / "rgb.png")  # coloured RGB export
    assert np.array_equal(read_mask(tmp_path / "rgb.png"), ids)
    Image.fromarray(np.stack([m.astype(np.uint8) * 255] * 3, -1)).save(tmp_path / "gray_rgb.png")
    assert np.array_equal(read_mask(tmp_path / "gray_rgb.png", 1), m)
    odd = np.zeros((4, 4, 3), np.uint8)
    odd[0, 0] = (1, 2, 3)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    with pytest.raises(MaskError, match=r"odd\.png: RGB mask has colour \(1, 2, 3\)"):
        read_mask(tmp_path / "odd.png")
    Image.fromarray(np.array([[0, 300], [2, 0]], np.uint16)).save(tmp_path / "i16.png")
    assert read_mask(tmp_path / "i16.png").tolist() == [[0, 300], [2, 0]]
    assert read_mask(tmp_path / "i16.png", 300).tolist() == [[False, True], [False, False]]


@needs_davis
def test_davis16_annotation():
    path = DAVIS / "Annotations" / "blackswan" / "00000.png"
    raw = read_mask(path)
    with Image.open(path) as im:
        expected = np.array(im) > 0
    assert raw.shape == (480, 854) and set(np.unique(raw).tolist()) <= {0, 255}
    meta = json.loads((DAVIS / "meta_expressions.json").read_text())
    obj_id = meta["videos"]["blackswan"]["expressions"]["0"]["obj_id"]
    mask = read_mask(path, obj_id)
    assert mask.dtype == bool and np.array_equal(mask, expected) and mask.sum() > 1000


def test_read_errors(tmp_path):
    with pytest.raises(MaskError, match=r"nope\.png: no such mask file"):
        read_mask(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MaskError, match=r"junk\.png: unreadable mask PNG"):
        read_mask(tmp_path / "junk.png")
    good = write_mask(tmp_path / "good.png", np.eye(50, dtype=bool))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MaskError, match=r"cut\.png"):
        read_mask(tmp_path / "cut.png")
    with pytest.raises(MaskError, match="folder"):
        read_mask(tmp_path)
    with pytest.raises(ConfigError):
        read_mask(good, "first")
    with pytest.raises(ConfigError):
        select_object(np.zeros((2, 2), np.uint8), -1)


def test_write_validation_and_atomicity(tmp_path):
    with pytest.raises(MaskError, match="binary"):
        write_mask(tmp_path / "x.png", np.array([[0, 2], [1, 0]]))
    with pytest.raises(MaskError, match="2-D"):
        write_mask(tmp_path / "x.png", np.zeros((2, 2, 2), bool))
    with pytest.raises(MaskError, match="0..255"):
        write_id_mask(tmp_path / "x.png", np.array([[0, 256]]))
    assert list(tmp_path.iterdir()) == []
    p = write_mask(tmp_path / "y.png", np.array([[0, 1], [255, 0]], np.uint8))
    assert read_mask(p, "any").tolist() == [[False, True], [True, False]]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["y.png"]  # no temp files left


# --------------------------------------------------------------------------- RLE


def test_rle_matches_independent_run_lengths():
    m = np.zeros((7, 5), bool)
    m[1:3, 1] = True
    m[6, 4] = True
    rle = rle_encode(m)
    assert rle["size"] == [7, 5] and isinstance(rle["counts"], str)
    json.dumps(rle)
    assert runs_column_major(m) == [8, 2, 24, 1]
    assert np.array_equal(rle_decode({"size": [7, 5], "counts": runs_column_major(m)}), m)
    assert np.array_equal(rle_decode(rle), m)
    assert np.array_equal(rle_decode({"size": [7, 5], "counts": rle["counts"].encode()}), m)
    assert rle_area(rle) == 3


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_rle_round_trip_property(mask):
    rle = rle_encode(mask)
    back = rle_decode(rle)
    assert back.dtype == bool and np.array_equal(back, mask)
    assert np.array_equal(rle_decode({"size": rle["size"], "counts": runs_column_major(mask)}), mask)


@needs_davis
def test_rle_on_real_mask():
    m = read_mask(DAVIS / "Annotations" / "dog" / "00010.png", 1)
    rle = rle_encode(m)
    assert np.array_equal(rle_decode(rle, shape=m.shape), m)
    assert rle_area(rle) == int(m.sum())


def test_rle_bad_input():
    good = rle_encode(np.eye(6, dtype=bool))
    assert not rle_decode(None, shape=(3, 4)).any() and rle_decode(None, shape=(3, 4)).shape == (3, 4)
    bad = [
        None,
        {"counts": good["counts"]},
        {"size": "6x6", "counts": good["counts"]},
        {"size": [6, 7], "counts": good["counts"]},  # runs do not cover the size
        {"size": [6, 6], "counts": good["counts"][:-1] + "~"},
        {"size": [6, 6], "counts": "\x01\x02"},
        {"size": [6, 6], "counts": [30, 7]},
        {"size": [6, 6], "counts": [40, -4]},
        {"size": [6, 6], "counts": 12},
        {"size": [2, 2], "counts": "o" * 40},  # absurd run length: must not reach the C decoder
    ]
    for rle in bad:
        with pytest.raises(MaskError):
            rle_decode(rle)
    with pytest.raises(MaskError, match="does not match"):
        rle_decode(good, shape=(6, 5))
    with pytest.raises(MaskError, match="binary"):
        rle_encode(np.array([[0, 3]]))


# --------------------------------------------------------------------------- submission layout


def test_submission_layout(tmp_path):
    assert submission_path(tmp_path, "dog", 0, "00005") == tmp_path / "dog" / "0" / "00005.png"
    assert submission_path(tmp_path, "dog", "3", "00005.jpg") == tmp_path / "dog" / "3" / "00005.png"
    assert submission_path("out", "LVVIS/train/7", "1", "f.png") == Path("out/LVVIS/train/7/1/f.png")
    for video, exp, frame in [("../x", 0, "a"), ("/abs", 0, "a"), ("v", "a/b", "f"), ("v", 0, ".."), ("", 0, "f")]:
        with pytest.raises(ConfigError):
            submission_path(tmp_path, video, exp, frame)
    m = np.zeros((48, 64), bool)
    m[10:20, 5:50] = True
    p = write_submission_mask(tmp_path, "dog", 0, "00005", m)
    assert p == tmp_path / "dog" / "0" / "00005.png"
    with Image.open(p) as im:
        assert im.mode == "L" and im.size == (64, 48)
        assert np.array_equal(np.array(im), m.astype(np.uint8) * 255)
    assert sorted(x.name for x in p.parent.iterdir()) == ["00005.png"]


def test_check_same_size_and_resize():
    check_same_size(np.zeros((4, 5)), np.zeros((4, 5), bool), "x.png")
    with pytest.raises(MaskError, match=r"pred/v/0/00001\.png: prediction is 6x4 but the ground truth is 5x4"):
        check_same_size(np.zeros((4, 5)), np.zeros((4, 6)), "pred/v/0/00001.png")
    m = np.zeros((4, 6), bool)
    m[:2, :3] = True
    big = resize_mask(m, (12, 8))
    assert big.shape == (8, 12) and big.dtype == bool and big[:4, :6].all() and not big[4:].any()
    ids = resize_mask(id_map(), (15, 10))
    assert ids.dtype == np.uint8 and set(np.unique(ids).tolist()) <= {0, 1, 2, 255}


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    st.integers(0, 12),
    st.integers(0, 12),
)
def test_rle_decode_fuzz_only_mask_errors(counts, h, w):
    """Arbitrary counts strings either decode to the stated size or raise MaskError, never crash."""
    try:
        out = rle_decode({"size": [h, w], "counts": counts})
    except MaskError:
        return
    assert out.shape == (h, w) and out.dtype == bool
