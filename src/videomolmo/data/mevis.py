"""MeViS reader (also reads the synthetic benchmark `videomolmo.synth` writes).

Layout::

    <root>/<split>/meta_expressions.json
    <root>/<split>/mask_dict.json             absent for the `valid` split (server-scored)
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/points.json                optional (synthetic data): ground-truth points

A split folder itself (`meta_expressions.json` next to `mask_dict.json`) is accepted as the
root with `split=None`.

`meta_expressions.json`::

    {"videos": {"<video>": {"expressions": {"<exp_id>": {"exp": "the bird flying away",
                                                         "obj_id": [0, 1], "anno_id": [7, 8]}, ...},
                            "frames": ["00000", "00001", ...]}}}

`mask_dict.json` maps `str(anno_id)` to one COCO RLE (`{"size": [h, w], "counts": "..."}`) or
`null` per listed frame (null: the object is not visible there). The ground truth of an
expression on a frame is the union over its `anno_id`s (the MeViS evaluator sums them). An
expression with no `anno_id` (e.g. a synthetic "absent" query) has all-empty ground truth.
`points.json` maps video -> `str(obj_id)` -> `[x, y]` or null per frame (pixels).
Splits: `valid_u` (default: has ground truth), `valid`, `train`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from videomolmo.data._common import extra_meta, id_list, iter_expressions
from videomolmo.data.sample import Dataset, NoMaskSource, RleMaskSource, Sample, read_json
from videomolmo.errors import DatasetError

FORMAT = "mevis"
SPLIT_PREFERENCE = ("valid_u", "valid", "train", "val", "test")
KNOWN_KEYS = {"exp", "obj_id", "anno_id"}


def available_splits(root: Path) -> list[str]:
    found = {d.name for d in Path(root).iterdir() if d.is_dir() and (d / "meta_expressions.json").is_file()} \
        if Path(root).is_dir() else set()
    return [s for s in SPLIT_PREFERENCE if s in found] + sorted(found - set(SPLIT_PREFERENCE))


def split_dir(root: Path, split: str | None, name: str = "MeViS") -> tuple[Path, str | None]:
    """The folder holding the split's files, and the split name (None for a bare split folder)."""
    root = Path(root)
    if (root / "meta_expressions.json").is_file():
        if split is not None and (root / split / "meta_expressions.json").is_file():
            return root / split, split
        if split is not None:
            raise DatasetError(f"{root}: a single-split {name} folder (meta_expressions.json at the top) "
                               f"has no split {split!r}")
        return root, None
    splits = available_splits(root)
    if split is None:
        if not splits:
            raise DatasetError(f"{root}: no <split>/meta_expressions.json found ({name})")
        split = splits[0]
    elif split not in splits:
        raise DatasetError(f"{root}: split {split!r} not found ({name}); available: {', '.join(splits) or 'none'}")
    return root / split, split


def _rle_size(rles: list[list[Any]]) -> tuple[int, int] | None:
    for per_frame in rles:
        for r in per_frame:
            if isinstance(r, dict) and isinstance(r.get("size"), (list, tuple)) and len(r["size"]) == 2:
                return int(r["size"][0]), int(r["size"][1])
    return None


def _points(points: dict | None, vid: str, obj_ids: list, n_frames: int) -> list[np.ndarray | None] | None:
    """Per-frame (N, 2) pixel points of the referred objects, from a synth-style points.json."""
    if points is None or vid not in points:
        return None
    per_obj = points[vid]
    out: list[np.ndarray | None] = []
    for t in range(n_frames):
        pts = []
        known = True
        for o in obj_ids:
            track = per_obj.get(str(o))
            if track is None or t >= len(track):
                known = False
                break
            if track[t] is not None:
                pts.append([float(track[t][0]), float(track[t][1])])
        out.append(np.asarray(pts, dtype=np.float64).reshape(-1, 2) if known else None)
    return out


def load_rle_split(folder: Path, *, root: Path, split: str | None, fmt: str, meta_file: Path | None = None,
                   mask_file: Path | None = None, jpeg_dir: Path | None = None,
                   known_keys: set[str] = KNOWN_KEYS, describe=None) -> Dataset:
    """Read a MeViS-schema split: expressions with `anno_id` lists and an RLE `mask_dict.json`."""
    meta_file = meta_file or folder / "meta_expressions.json"
    mask_file = mask_file or folder / "mask_dict.json"
    jpeg_dir = jpeg_dir or folder / "JPEGImages"
    mask_dict = read_json(mask_file, "mask dict") if mask_file.is_file() else None
    if mask_dict is not None and not isinstance(mask_dict, dict):
        raise DatasetError(f"{mask_file}: expected a JSON object mapping anno_id to per-frame RLEs")
    points_file = folder / "points.json"
    points = read_json(points_file, "points file") if points_file.is_file() else None
    samples: list[Sample] = []
    for e in iter_expressions(meta_file, jpeg_dir):
        vid, exp_id, names, entry = e.vid, e.exp_id, e.names, e.entry
        vsize = (int(entry["height"]), int(entry["width"])) if "height" in entry and "width" in entry else None
        anno_ids = id_list(e.exp.get("anno_id"), "anno_id", e.where)
        if mask_dict is None:
            source = NoMaskSource(f"{folder} ({fmt}: no mask_dict.json)")
        else:
            rles = []
            for a in anno_ids:
                per_frame = mask_dict.get(str(a))
                if not isinstance(per_frame, list):
                    raise DatasetError(f"{mask_file}: anno_id {a!r} (video {vid!r} expression {exp_id!r}) "
                                       "has no per-frame mask list")
                if len(per_frame) != len(names):
                    raise DatasetError(f"{mask_file}: anno_id {a!r} has {len(per_frame)} masks but video "
                                       f"{vid!r} lists {len(names)} frames")
                rles.append(tuple(per_frame))
            source = RleMaskSource(tuple(rles), where=f"{mask_file} (video {vid}, expression {exp_id})",
                                   size=_rle_size(rles) or vsize)
        meta = {"format": fmt, "split": split, "anno_ids": anno_ids, **extra_meta(e.exp, known_keys)}
        if describe is not None:
            meta.update(describe(e.exp, entry))
        samples.append(Sample(
            video_id=vid, exp_id=exp_id, expression=e.exp["exp"], obj_ids=e.obj_ids,
            frame_names=names, frame_paths=e.paths, masks=source,
            gt_points=_points(points, vid, e.obj_ids, len(names)), meta=meta,
        ))
    return Dataset(samples, root=root, split=split, fmt=fmt)


def load(root: Path, split: str | None = None) -> Dataset:
    """Load a MeViS split (see the module docstring for the layout)."""
    root = Path(root)
    folder, split = split_dir(root, split)
    return load_rle_split(folder, root=root, split=split, fmt=FORMAT)
