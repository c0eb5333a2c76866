"""Ref-YouTube-VOS reader (and the ReferFormer meta-expression schema it shares with Ref-DAVIS17).

Layout (either place for the meta file is accepted; the second is ReferFormer's)::

    <root>/<split>/meta_expressions.json                     or
    <root>/meta_expressions/<split>/meta_expressions.json
    <root>/<split>/JPEGImages/<video>/<frame>.jpg
    <root>/<split>/Annotations/<video>/<frame>.png           palette PNGs, pixel value = object id

`meta_expressions.json`::

    {"videos": {"<video>": {"expressions": {"<exp_id>": {"exp": "a person riding a skateboard",
                                                         "obj_id": "1"}, ...},
                            "frames": ["00000", "00005", ...]}}}

The train split lists `obj_id` per expression and has `Annotations`; the valid / test splits
list only `exp` and ship no masks (`Sample.has_masks` is False: score them on the server).
YouTube-VOS frames step by 5 (every fifth frame of the 30 fps video is annotated); `frame_names`
are exactly the listed ones, in the listed order. `obj_id` may also be a list of ids (union).
Splits: `train`, `valid` (default: `valid` when present, else the only split found).
"""

from __future__ import annotations

from pathlib import Path

from videomolmo.data._common import as_int_id, extra_meta, iter_expressions
from videomolmo.data.sample import Dataset, NoMaskSource, PngMaskSource, Sample
from videomolmo.errors import DatasetError

FORMAT = "ytvos"
SPLIT_PREFERENCE = ("valid", "train", "test")


def meta_path(root: Path, split: str) -> Path | None:
    """Where the split's meta file is, in either accepted place (None if in neither)."""
    for p in (root / split / "meta_expressions.json", root / "meta_expressions" / split / "meta_expressions.json"):
        if p.is_file():
            return p
    return None


def available_splits(root: Path) -> list[str]:
    """Splits with a meta file, in preference order first, then alphabetically."""
    found = set()
    for base in (root, root / "meta_expressions"):
        if base.is_dir():
            for d in base.iterdir():
                if d.is_dir() and (d / "meta_expressions.json").is_file():
                    found.add(d.name)
    return [s for s in SPLIT_PREFERENCE if s in found] + sorted(found - set(SPLIT_PREFERENCE))


def pick_split(root: Path, split: str | None, fmt_name: str) -> str:
    splits = available_splits(root)
    if split is None:
        if not splits:
            raise DatasetError(f"{root}: no <split>/meta_expressions.json or "
                               f"meta_expressions/<split>/meta_expressions.json found ({fmt_name})")
        return splits[0]
    if split not in splits:
        raise DatasetError(f"{root}: split {split!r} not found ({fmt_name}); available: {', '.join(splits) or 'none'}")
    return split


def load_referformer(meta_file: Path, jpeg_dir: Path, ann_dir: Path, *, root: Path, split: str | None,
                     fmt: str) -> Dataset:
    """Read a ReferFormer-schema `meta_expressions.json` with PNG annotations (Ref-DAVIS17 / Ref-YTVOS)."""
    has_ann = ann_dir.is_dir()
    samples: list[Sample] = []
    for e in iter_expressions(meta_file, jpeg_dir):
        if e.obj_ids and has_ann:
            ids = [as_int_id(o, e.where) for o in e.obj_ids]
            source = PngMaskSource(tuple(
                tuple((str(ann_dir / e.vid / f"{n}.png"), k) for k in ids) for n in e.names))
        else:
            source = NoMaskSource(f"{meta_file.parent} ({fmt}, expression {e.vid}/{e.exp_id} has no "
                                  + ("obj_id)" if has_ann else "Annotations folder)"))
        samples.append(Sample(
            video_id=e.vid, exp_id=e.exp_id, expression=e.exp["exp"], obj_ids=e.obj_ids,
            frame_names=e.names, frame_paths=e.paths, masks=source,
            meta={"format": fmt, "split": split, **extra_meta(e.exp, {"exp", "obj_id"})},
        ))
    return Dataset(samples, root=root, split=split, fmt=fmt)


def load(root: Path, split: str | None = None) -> Dataset:
    """Load a Ref-YouTube-VOS split (see the module docstring for the layout)."""
    root = Path(root)
    split = pick_split(root, split, "Ref-YouTube-VOS")
    mp = meta_path(root, split)
    assert mp is not None  # pick_split checked it
    return load_referformer(mp, root / split / "JPEGImages", root / split / "Annotations",
                            root=root, split=split, fmt=FORMAT)
