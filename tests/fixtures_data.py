"""Tiny benchmark folders in each reader's schema, built from real davis16-mini masks.

Each builder writes a few frames of two DAVIS videos into `tmp` in one benchmark's layout and
returns the root plus `expected`: {(video, exp_id): [bool (H, W) GT mask per listed frame]},
computed here from the source PNGs (not by the reader under test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from conftest import DAVIS  # noqa: E402

VIDEOS = ("dog", "blackswan")
FRAMES = ("00000", "00001", "00002")
YT_FRAMES = ("00000", "00005", "00010")  # Ref-YouTube-VOS lists every fifth frame


def davis_mask(video: str, frame: str) -> np.ndarray:
    """The DAVIS 2016 object of `video` on `frame` (0/255 PNG -> bool)."""
    return np.array(Image.open(DAVIS / "Annotations" / video / f"{frame}.png")) > 0


def box_mask(shape: tuple[int, int], t: int) -> np.ndarray:
    """A second, synthetic object: a box that moves 10 px right per frame, drawn over nothing."""
    m = np.zeros(shape, dtype=bool)
    m[20:80, 30 + 10 * t: 130 + 10 * t] = True
    return m


def copy_frames(video: str, frames, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in frames:
        shutil.copyfile(DAVIS / "JPEGImages" / video / f"{f}.jpg", dest / f"{f}.jpg")


def palette_png(ids: np.ndarray, path: Path) -> None:
    """An id map as a palette PNG, as DAVIS 2017 / YouTube-VOS ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)
    im.putpalette(palette)
    im.save(path)


def binary_png(mask: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _two_objects(video: str, frame: str, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id map, object 1, object 2): object 1 = the DAVIS object, object 2 = the box minus it."""
    obj1 = davis_mask(video, frame)
    obj2 = box_mask(obj1.shape, t) & ~obj1
    ids = np.zeros(obj1.shape, dtype=np.uint8)
    ids[obj2] = 2
    ids[obj1] = 1
    return ids, obj1, obj2


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# --------------------------------------------------------------------------- Ref-DAVIS17


def build_refdavis(tmp: Path, split_layout: bool = False):
    """Palette PNGs with two objects per frame; expressions on object 1, object 2 and both.

    `split_layout=True` writes ReferFormer's converted layout (`meta_expressions/valid/...`).
    """
    root = tmp / "refdavis"
    base = root / "valid" if split_layout else root
    meta = {"videos": {}}
    expected = {}
    for video in VIDEOS:
        copy_frames(video, FRAMES, base / "JPEGImages" / video)
        o1, o2 = [], []
        for t, f in enumerate(FRAMES):
            ids, a, b = _two_objects(video, f, t)
            palette_png(ids, base / "Annotations" / video / f"{f}.png")
            o1.append(a)
            o2.append(b)
        meta["videos"][video] = {"expressions": {"0": {"exp": f"the {video}", "obj_id": "1"},
                                                 "1": {"exp": "the box", "obj_id": "2"},
                                                 "2": {"exp": "both", "obj_id": ["1", "2"]}},
                                 "frames": list(FRAMES)}
        expected[(video, "0")] = o1
        expected[(video, "1")] = o2
        expected[(video, "2")] = [a | b for a, b in zip(o1, o2)]
    write_json(root / "meta_expressions" / "valid" / "meta_expressions.json" if split_layout
               else root / "meta_expressions.json", meta)
    return root, expected


# --------------------------------------------------------------------------- Ref-YouTube-VOS


def build_ytvos(tmp: Path):
    """train: frames stepping by 5 with palette PNGs, meta in ReferFormer's `meta_expressions/train/`;
    valid: `valid/meta_expressions.json` with `exp` only and no Annotations."""
    root = tmp / "ytvos"
    train = {"videos": {}}
    valid = {"videos": {}}
    expected = {}
    for video in VIDEOS:
        copy_frames(video, YT_FRAMES, root / "train" / "JPEGImages" / video)
        copy_frames(video, YT_FRAMES, root / "valid" / "JPEGImages" / video)
        o1, o2 = [], []
        for t, f in enumerate(YT_FRAMES):
            ids, a, b = _two_objects(video, f, t)
            palette_png(ids, root / "train" / "Annotations" / video / f"{f}.png")
            o1.append(a)
            o2.append(b)
        train["videos"][video] = {"expressions": {"0": {"exp": f"the {video}", "obj_id": "1"},
                                                  "1": {"exp": "the box", "obj_id": "2"}},
                                  "frames": list(YT_FRAMES)}
        valid["videos"][video] = {"expressions": {"0": {"exp": f"the {video}"}}, "frames": list(YT_FRAMES)}
        expected[(video, "0")] = o1
        expected[(video, "1")] = o2
    write_json(root / "meta_expressions" / "train" / "meta_expressions.json", train)
    write_json(root / "valid" / "meta_expressions.json", valid)
    return root, expected


# --------------------------------------------------------------------------- MeViS / ReVOS


def _rle_videos(prefix: str = ""):
    """Expressions with anno_id lists and a mask_dict: the DAVIS object (absent, i.e. null, on
    frame 1), the box, both, and none. Returns (videos meta, mask_dict, expected)."""
    videos, mask_dict, expected = {}, {}, {}
    anno = 0
    for video in VIDEOS:
        objs = [[], []]
        for t, f in enumerate(FRAMES):
            _, a, b = _two_objects(video, f, t)
            if t == 1:
                a = np.zeros_like(a)  # the object leaves the frame: stored as null
            objs[0].append(a)
            objs[1].append(b)
        ids = []
        for masks in objs:
            mask_dict[str(anno)] = [rle(m) if m.any() else None for m in masks]
            ids.append(anno)
            anno += 1
        key = f"{prefix}{video}"
        videos[key] = {"expressions": {
            "0": {"exp": f"the {video}", "obj_id": [0], "anno_id": [ids[0]]},
            "1": {"exp": "the box", "obj_id": [1], "anno_id": [ids[1]]},
            "2": {"exp": "both", "obj_id": [0, 1], "anno_id": ids},
            "3": {"exp": "the green star", "obj_id": [], "anno_id": []},
        }, "frames": list(FRAMES)}
        expected[(key, "0")] = objs[0]
        expected[(key, "1")] = objs[1]
        expected[(key, "2")] = [a | b for a, b in zip(*objs)]
        expected[(key, "3")] = [np.zeros_like(a) for a in objs[0]]
    return videos, mask_dict, expected


def build_mevis(tmp: Path):
    """valid_u (with mask_dict.json) and valid (meta only, no ground truth)."""
    root = tmp / "mevis"
    videos, mask_dict, expected = _rle_videos()
    for video in VIDEOS:
        copy_frames(video, FRAMES, root / "valid_u" / "JPEGImages" / video)
        copy_frames(video, FRAMES, root / "valid" / "JPEGImages" / video)
    write_json(root / "valid_u" / "meta_expressions.json", {"videos": videos})
    write_json(root / "valid_u" / "mask_dict.json", mask_dict)
    write_json(root / "valid" / "meta_expressions.json", {"videos": videos})
    return root, expected


def build_revos(tmp: Path):
    """VISA's layout: root-level meta_expressions_valid_.json, mask_dict.json, nested video keys."""
    root = tmp / "revos"
    videos, mask_dict, expected = _rle_videos(prefix="Ref-Youtube-VOS/")
    for key, entry in videos.items():
        for k, exp in entry["expressions"].items():
            exp["type_id"] = int(k) % 2
        copy_frames(key.split("/")[1], FRAMES, root / "JPEGImages" / key)
    write_json(root / "meta_expressions_valid_.json", {"videos": videos})
    write_json(root / "mask_dict.json", mask_dict)
    return root, expected


# --------------------------------------------------------------------------- ReasonVOS


def build_reasonvos(tmp: Path):
    """Expressions as a list (with a duplicated exp_id); masks in Annotations/<source>_<vid>_<obj>/."""
    root = tmp / "reasonvos"
    meta = {"videos": {}}
    expected = {}
    for video, source in zip(VIDEOS, ("MeViS", "MOSE")):
        copy_frames(video, FRAMES, root / "JPEGImages" / video)
        o1, o2 = [], []
        for t, f in enumerate(FRAMES):
            _, a, b = _two_objects(video, f, t)
            binary_png(a, root / "Annotations" / f"{source}_{video}_1" / f"{f}.png")
            binary_png(b, root / "Annotations" / f"{source}_{video}_2" / f"{f}.png")
            o1.append(a)
            o2.append(b)
        meta["videos"][video] = {"source": source, "frames": list(FRAMES), "expressions": [
            {"exp_id": 0, "exp_text": f"which animal is this {video}?", "obj_id": 1, "is_sent": 1},
            {"exp_id": 1, "exp_text": "the box", "obj_id": 2, "is_sent": 0},
            {"exp_id": 1, "exp_text": "the rectangle again", "obj_id": 2, "is_sent": 0},
        ]}
        expected[(video, "0")] = o1
        expected[(video, "1")] = o2
        expected[(video, "2")] = o2  # the duplicate exp_id 1 gets the next free id
    write_json(root / "meta_expressions.json", meta)
    return root, expected


BUILDERS = {
    "refdavis": build_refdavis,
    "ytvos": build_ytvos,
    "mevis": build_mevis,
    "revos": build_revos,
    "reasonvos": build_reasonvos,
}
