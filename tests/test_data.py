"""Benchmark readers: one tiny fixture per schema built from real davis16-mini masks."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from conftest import needs_davis  # noqa: E402
from fixtures_data import BUILDERS, DAVIS, FRAMES, YT_FRAMES, build_mevis, build_reasonvos, build_refdavis, \
    build_revos, build_ytvos, davis_mask
from videomolmo.data import Dataset, Sample, detect_format, load_dataset
from videomolmo.errors import DatasetError, MaskError



def assert_matches(ds: Dataset, expected: dict) -> None:
    assert {s.key for s in ds} == set(expected)
    for key, masks in expected.items():
        s = ds[key]
        assert isinstance(s, Sample) and s.has_masks
        got = s.gt_masks()
        assert got.dtype == bool and got.shape == (len(masks),) + masks[0].shape
        for t, m in enumerate(masks):
            assert np.array_equal(got[t], m), f"{key} frame {t}"
            assert np.array_equal(s.gt_mask(t), m)


# --------------------------------------------------------------------------- davis16-mini


@needs_davis
def test_davis16_mini_is_ref_davis():
    assert detect_format(DAVIS) == "refdavis"
    ds = load_dataset(DAVIS)
    assert ds.format == "refdavis" and ds.split is None
    assert len(ds.videos()) == 6 and len(ds) == 12
    meta = json.loads((DAVIS / "meta_expressions.json").read_text())
    s = ds["dog", "1"]
    assert s.expression == meta["videos"]["dog"]["expressions"]["1"]["exp"]
    assert s.frame_names == meta["videos"]["dog"]["frames"] and len(s) == 60
    assert all(p.is_file() for p in s.frame_paths)
    # obj_id "1" on a 0/255 PNG is every non-zero pixel
    for t in (0, 31, 59):
        assert np.array_equal(s.gt_mask(t), davis_mask("dog", s.frame_names[t]))
    assert s.gt_mask(-1).shape == (480, 854)
    assert ds.get("dog", 1) is s and ("dog", "1") in ds and ("dog", "7") not in ds
    with pytest.raises(KeyError):
        ds.get("dog", "7")
    assert [x.exp_id for x in ds.expressions("dog")] == ["0", "1"]
    ds.validate()


@needs_davis
def test_sample_video_yields_the_listed_frames():
    s = load_dataset(DAVIS)["blackswan", "0"]
    video = s.video()
    assert len(video) == 50 and video.frame_names == s.frame_names
    frame = video[3]
    assert frame.shape == (480, 854, 3) and frame.dtype == np.uint8


@needs_davis
def test_sample_video_over_a_subset_of_a_folder(tmp_path):
    root, _ = build_ytvos(tmp_path)
    # a frame the meta does not list must not appear in the video
    shutil.copyfile(DAVIS / "JPEGImages" / "dog" / "00001.jpg", root / "train" / "JPEGImages" / "dog" / "00001.jpg")
    s = load_dataset(root, split="train")["dog", "0"]
    video = s.video()
    assert video.frame_names == list(YT_FRAMES) and len(video) == 3
    assert video[2].shape == (480, 854, 3)


# --------------------------------------------------------------------------- each schema


@needs_davis
@pytest.mark.parametrize("fmt", sorted(BUILDERS))
def test_each_format_is_detected_and_read(tmp_path, fmt):
    root, expected = BUILDERS[fmt](tmp_path)
    assert detect_format(root) == fmt
    split = "train" if fmt == "ytvos" else None
    ds = load_dataset(root, split=split)
    assert ds.format == fmt
    assert_matches(ds, expected)
    ds.validate()
    # samples travel to worker processes
    s = pickle.loads(pickle.dumps(ds[0]))
    assert np.array_equal(s.gt_mask(0), ds[0].gt_mask(0))


@needs_davis
def test_refdavis_referformer_split_layout(tmp_path):
    root, expected = build_refdavis(tmp_path, split_layout=True)
    assert detect_format(root) == "refdavis"  # frames step by 1, not 5
    ds = load_dataset(root)
    assert ds.split == "valid"
    assert_matches(ds, expected)
    assert ds["dog", "2"].obj_ids == ["1", "2"]


@needs_davis
def test_ytvos_valid_has_no_ground_truth(tmp_path):
    root, _ = build_ytvos(tmp_path)
    ds = load_dataset(root)  # default split: valid
    assert ds.split == "valid" and not ds.has_masks
    s = ds["dog", "0"]
    assert s.obj_ids == [] and s.frame_names == list(YT_FRAMES)
    with pytest.raises(DatasetError, match="no ground-truth masks"):
        s.gt_mask(0)
    with pytest.raises(DatasetError, match="split 'test' not found"):
        load_dataset(root, split="test")


@needs_davis
def test_mevis_splits_union_and_nulls(tmp_path):
    root, expected = build_mevis(tmp_path)
    ds = load_dataset(root)
    assert ds.split == "valid_u"  # the split with ground truth comes first
    s = ds["dog", "2"]
    assert s.obj_ids == [0, 1] and s.meta["anno_ids"] == [0, 1]
    assert not ds["dog", "0"].gt_mask(1).any()  # null RLE -> empty frame
    assert ds["dog", "3"].gt_mask(0).shape == (480, 854)  # no anno_id: size from the JPEG
    valid = load_dataset(root, split="valid")
    assert not valid.has_masks and len(valid) == len(ds)


@needs_davis
def test_mevis_split_folder_as_root_with_points(tmp_path):
    root, _ = build_mevis(tmp_path)
    folder = root / "valid_u"
    (folder / "points.json").write_text(json.dumps(
        {"dog": {"0": [[10.0, 20.0], None, [12.5, 21.0]], "1": [[50, 60], [51, 61], [52, 62]]}}))
    ds = load_dataset(folder)
    assert ds.format == "mevis" and ds.split is None
    pts = ds["dog", "2"].gt_points
    assert [p.shape for p in pts] == [(2, 2), (1, 2), (2, 2)]
    assert np.allclose(pts[0], [[10, 20], [50, 60]])
    assert ds["blackswan", "0"].gt_points is None


@needs_davis
def test_revos_path_keys_and_type_ids(tmp_path):
    root, _ = build_revos(tmp_path)
    ds = load_dataset(root)
    assert ds.split == "valid" and ds.videos() == ["Ref-Youtube-VOS/dog", "Ref-Youtube-VOS/blackswan"]
    s = ds["Ref-Youtube-VOS/dog", "1"]
    assert s.meta["type_id"] == 1 and s.meta["kind"] == "reasoning"
    assert ds["Ref-Youtube-VOS/dog", "0"].meta["kind"] == "referring"
    assert s.frame_paths[0].parts[-3:] == ("Ref-Youtube-VOS", "dog", "00000.jpg")


@needs_davis
def test_reasonvos_duplicate_exp_ids_and_sources(tmp_path):
    root, _ = build_reasonvos(tmp_path)
    ds = load_dataset(root)
    s = ds["dog", "2"]
    assert s.expression == "the rectangle again" and s.meta["original_exp_id"] == "1"
    assert s.meta["source"] == "MeViS" and s.meta["is_sent"] == 0
    assert ds["blackswan", "0"].meta["source"] == "MOSE"
    # VideoLISA's checker lower-cases the source in folder names: accept that spelling too
    ann = root / "Annotations"
    (ann / "MOSE_blackswan_1").rename(ann / "mose_blackswan_1")
    assert np.array_equal(load_dataset(root)["blackswan", "0"].gt_mask(0), davis_mask("blackswan", FRAMES[0]))


# --------------------------------------------------------------------------- bad input


def test_unknown_layout_names_what_was_looked_for(tmp_path):
    (tmp_path / "something.txt").write_text("hi")
    with pytest.raises(DatasetError, match="unknown dataset layout.*meta_expressions.json"):
        detect_format(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_missing_meta_file_with_explicit_format(tmp_path):
    with pytest.raises(DatasetError, match="ReasonVOS|meta_expressions.json: meta file not found"):
        load_dataset(tmp_path, fmt="reasonvos")
    with pytest.raises(DatasetError, match="no <split>/meta_expressions.json"):
        load_dataset(tmp_path, fmt="Ref-YouTube-VOS")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(tmp_path, fmt="kinetics")


def test_malformed_json(tmp_path):
    (tmp_path / "meta_expressions.json").write_text('{"videos": {"a": ')
    with pytest.raises(DatasetError, match=r"meta_expressions.json: malformed JSON"):
        load_dataset(tmp_path)
    (tmp_path / "meta_expressions.json").write_text('{"videos": {"a": {"expressions": {}}}}')
    with pytest.raises(DatasetError, match="video 'a' has no 'frames' list"):
        load_dataset(tmp_path)
    (tmp_path / "meta_expressions.json").write_text('[1, 2]')
    with pytest.raises(DatasetError, match="'videos' mapping"):
        load_dataset(tmp_path, fmt="refdavis")


@needs_davis
def test_referenced_frame_missing(tmp_path):
    root, _ = build_refdavis(tmp_path)
    (root / "Annotations" / "dog" / "00001.png").unlink()
    (root / "JPEGImages" / "blackswan" / "00002.jpg").unlink()
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match=r"dog/00001.png: referenced mask file is missing"):
        ds["dog", "0"].gt_mask(1)
    with pytest.raises(DatasetError, match=r"blackswan/00002.jpg: referenced frame is missing"):
        ds["blackswan", "0"].video()
    with pytest.raises(DatasetError, match="referenced"):
        ds.validate()


@needs_davis
def test_mask_dict_inconsistent_with_frames(tmp_path):
    root, _ = build_mevis(tmp_path)
    md = json.loads((root / "valid_u" / "mask_dict.json").read_text())
    md["0"] = md["0"][:2]
    (root / "valid_u" / "mask_dict.json").write_text(json.dumps(md))
    with pytest.raises(DatasetError, match="anno_id 0 has 2 masks but video 'dog' lists 3 frames"):
        load_dataset(root)
    del md["0"]
    (root / "valid_u" / "mask_dict.json").write_text(json.dumps(md))
    with pytest.raises(DatasetError, match="anno_id 0 .*has no per-frame mask list"):
        load_dataset(root)


@needs_davis
def test_unreadable_mask_png(tmp_path):
    root, _ = build_refdavis(tmp_path)
    (root / "Annotations" / "dog" / "00000.png").write_bytes(b"not a png")
    with pytest.raises(MaskError, match=r"00000.png: unreadable mask PNG"):
        load_dataset(root)["dog", "0"].gt_mask(0)


@needs_davis
@pytest.mark.parametrize("build", [build_refdavis, build_mevis])
def test_per_object_ground_truth(tmp_path, build):
    root, expected = build(tmp_path)
    ds = load_dataset(root)
    s = ds["dog", "2"]  # both objects
    for t in range(len(FRAMES)):
        objs = s.gt_object_masks(t)
        assert len(objs) == 2
        assert np.array_equal(objs[0], expected["dog", "0"][t]) and np.array_equal(objs[1], expected["dog", "1"][t])
        assert np.array_equal(objs[0] | objs[1], s.gt_mask(t))


@needs_davis
def test_corrupt_rle_names_the_mask_dict(tmp_path):
    root, _ = build_mevis(tmp_path)
    md_path = root / "valid_u" / "mask_dict.json"
    md = json.loads(md_path.read_text())
    md["1"][0]["counts"] = md["1"][0]["counts"][:-3]  # runs no longer cover the frame
    md_path.write_text(json.dumps(md))
    s = load_dataset(root)["dog", "1"]
    with pytest.raises(DatasetError, match=r"mask_dict.json \(video dog, expression 1\): frame index 0"):
        s.gt_mask(0)


@needs_davis
def test_mevis_detected_when_the_preferred_split_has_only_text(tmp_path):
    root, _ = build_mevis(tmp_path)
    shutil.rmtree(root / "valid_u")
    meta_path = root / "valid" / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    for entry in meta["videos"].values():
        entry["expressions"] = {k: {"exp": e["exp"]} for k, e in entry["expressions"].items()}
    meta_path.write_text(json.dumps(meta))
    assert detect_format(root) == "refdavis"  # nothing MeViS-like left: indistinguishable
    (root / "train").mkdir()
    (root / "train" / "meta_expressions.json").write_text(json.dumps(meta))
    (root / "train" / "mask_dict.json").write_text("{}")
    assert detect_format(root) == "mevis"
