"""ReVOS reader (VISA's reasoning video object segmentation benchmark).

Official layout (one mask file for all splits)::

    <root>/meta_expressions_train_.json
    <root>/meta_expressions_valid_.json
    <root>/mask_dict.json                     anno_id -> [COCO RLE or null per frame]
    <root>/mask_dict_foreground.json          optional, not used here
    <root>/JPEGImages/<video key>/<frame>.jpg

Video keys are paths naming the source collection, e.g. "Ref-Youtube-VOS/0a7a2514aa" or
"MOSE/...", so the frame folder is nested. The schema is MeViS's plus `type_id`::

    {"videos": {"<video key>": {"expressions": {"<exp_id>": {"exp": "...", "obj_id": [1],
                                                             "anno_id": [12], "type_id": 0}, ...},
                                "frames": ["00000", ...]}}}

`type_id` 0 = referring, 1 = reasoning (kept in `meta["type_id"]`, named in `meta["kind"]`).
A MeViS-style split folder (`<root>/<split>/meta_expressions.json` + `mask_dict.json`) whose
expressions carry `type_id` is read the same way. Ground truth = union over `anno_id`s.
Splits: `valid` (default), `train`.
"""

from __future__ import annotations

import re
from pathlib import Path

from videomolmo.data import mevis
from videomolmo.data.sample import Dataset
from videomolmo.errors import DatasetError

FORMAT = "revos"
SPLIT_PREFERENCE = ("valid", "train", "test")
TYPE_NAMES = {0: "referring", 1: "reasoning"}
_META_RE = re.compile(r"^meta_expressions_(.+)_\.json$")


def root_splits(root: Path) -> list[str]:
    """Splits of the official layout (`meta_expressions_<split>_.json` at the root)."""
    root = Path(root)
    found = {m.group(1) for p in root.glob("meta_expressions_*_.json") if (m := _META_RE.match(p.name))} \
        if root.is_dir() else set()
    return [s for s in SPLIT_PREFERENCE if s in found] + sorted(found - set(SPLIT_PREFERENCE))


def _describe(exp: dict, entry: dict) -> dict:
    out: dict = {}
    if "type_id" in exp:
        try:
            t = int(exp["type_id"])
        except (TypeError, ValueError):
            t = exp["type_id"]
        out["type_id"] = t
        out["kind"] = TYPE_NAMES.get(t, f"type_{t}")
    if "source" in entry:
        out["source"] = entry["source"]
    return out


def load(root: Path, split: str | None = None) -> Dataset:
    """Load a ReVOS split (see the module docstring for the layout)."""
    root = Path(root)
    splits = root_splits(root)
    known = mevis.KNOWN_KEYS | {"type_id"}
    if splits:
        if split is None:
            split = splits[0]
        elif split not in splits:
            raise DatasetError(f"{root}: split {split!r} not found (ReVOS, meta_expressions_<split>_.json); "
                               f"available: {', '.join(splits)}")
        return mevis.load_rle_split(root, root=root, split=split, fmt=FORMAT,
                                    meta_file=root / f"meta_expressions_{split}_.json",
                                    mask_file=root / "mask_dict.json", jpeg_dir=root / "JPEGImages",
                                    known_keys=known, describe=_describe)
    folder, split = mevis.split_dir(root, split, "ReVOS")
    return mevis.load_rle_split(folder, root=root, split=split, fmt=FORMAT, known_keys=known, describe=_describe)
