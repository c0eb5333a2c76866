"""Ref-DAVIS17 reader, ReferFormer-converted layout (`../shared/data/davis16-mini` is in it).

Flat layout (one split; `split` must be None)::

    <root>/meta_expressions.json
    <root>/JPEGImages/<video>/<frame>.jpg
    <root>/Annotations/<video>/<frame>.png

or ReferFormer's converted layout with splits (same schema as Ref-YouTube-VOS)::

    <root>/meta_expressions/<split>/meta_expressions.json   (or <root>/<split>/meta_expressions.json)
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png

`meta_expressions.json`::

    {"videos": {"<video>": {"expressions": {"0": {"exp": "the black swan", "obj_id": "1"}, ...},
                            "frames": ["00000", "00001", ...]}}}

Object ids: true Ref-DAVIS17 annotations are palette PNGs with ids 1..N and `obj_id` selects
pixels equal to it. A 0/255 single-object PNG (DAVIS 2016, davis16-mini) has one object, so
`obj_id` "1" is every non-zero pixel there. Every listed frame is annotated (DAVIS annotates
all frames); `Annotations` missing entirely means a split without ground truth.
Splits (converted layout): `valid` (default), `train`.
"""

from __future__ import annotations

from pathlib import Path

from videomolmo.data import ytvos
from videomolmo.data.sample import Dataset
from videomolmo.errors import DatasetError

FORMAT = "refdavis"


def is_flat(root: Path) -> bool:
    return (Path(root) / "meta_expressions.json").is_file()


def load(root: Path, split: str | None = None) -> Dataset:
    """Load Ref-DAVIS17 (flat or ReferFormer split layout; see the module docstring)."""
    root = Path(root)
    if is_flat(root):
        if split is not None:
            raise DatasetError(f"{root}: flat Ref-DAVIS layout (meta_expressions.json at the top) has no "
                               f"splits, got split {split!r}")
        return ytvos.load_referformer(root / "meta_expressions.json", root / "JPEGImages", root / "Annotations",
                                      root=root, split=None, fmt=FORMAT)
    split = ytvos.pick_split(root, split, "Ref-DAVIS17")
    mp = ytvos.meta_path(root, split)
    assert mp is not None
    return ytvos.load_referformer(mp, root / split / "JPEGImages", root / split / "Annotations",
                                  root=root, split=split, fmt=FORMAT)
