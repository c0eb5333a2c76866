"""Which benchmark layout a folder is in, and `load_dataset` that dispatches on it.

Detection looks only at file names and the meta JSON's schema, in this order:

1. `meta_expressions_<split>_.json` at the root                    -> ReVOS
2. `meta_expressions.json` at the root:
   expressions as a list of `exp_text` dicts                        -> ReasonVOS
   expressions with `anno_id` (+ `type_id`)                         -> MeViS (ReVOS)
   otherwise                                                         -> Ref-DAVIS17 (flat)
3. `<split>/meta_expressions.json` or `meta_expressions/<split>/meta_expressions.json`:
   any split with `anno_id` expressions (+ `type_id`) or a
   `<split>/mask_dict.json`                                          -> MeViS (ReVOS)
   frame names stepping by 5                                         -> Ref-YouTube-VOS
   otherwise                                                         -> Ref-DAVIS17 (ReferFormer layout)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from videomolmo.data import mevis, reasonvos, refdavis, revos, ytvos
from videomolmo.data.sample import Dataset, read_json
from videomolmo.errors import DatasetError

LOADERS: dict[str, Callable[[Path, str | None], Dataset]] = {
    "refdavis": refdavis.load,
    "ytvos": ytvos.load,
    "mevis": mevis.load,
    "revos": revos.load,
    "reasonvos": reasonvos.load,
}
FORMATS: tuple[str, ...] = tuple(LOADERS)
FORMAT_NAMES = {"refdavis": "Ref-DAVIS17", "ytvos": "Ref-YouTube-VOS", "mevis": "MeViS", "revos": "ReVOS",
                "reasonvos": "ReasonVOS"}
_ALIASES = {
    "refdavis": "refdavis", "refdavis17": "refdavis", "davis": "refdavis", "davis17": "refdavis",
    "ytvos": "ytvos", "refytvos": "ytvos", "refyoutubevos": "ytvos", "youtubevos": "ytvos",
    "mevis": "mevis", "revos": "revos", "reasonvos": "reasonvos",
}

LOOKED_FOR = ("meta_expressions.json (Ref-DAVIS17 / ReasonVOS / MeViS split folder), "
              "<split>/meta_expressions.json (Ref-YouTube-VOS / MeViS), "
              "meta_expressions/<split>/meta_expressions.json (ReferFormer), "
              "meta_expressions_<split>_.json (ReVOS)")


def normalize_format(fmt: str) -> str:
    """Canonical format name from a user spelling ("Ref-YouTube-VOS", "ref_davis17", ...)."""
    key = fmt.lower().replace("-", "").replace("_", "").replace(" ", "")
    if key not in _ALIASES:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return _ALIASES[key]


def _expressions(meta: object) -> list[dict]:
    out: list[dict] = []
    if isinstance(meta, dict) and isinstance(meta.get("videos"), dict):
        for entry in meta["videos"].values():
            exps = entry.get("expressions") if isinstance(entry, dict) else None
            if isinstance(exps, dict):
                out.extend(e for e in exps.values() if isinstance(e, dict))
            elif isinstance(exps, list):
                out.extend(e for e in exps if isinstance(e, dict))
            if len(out) >= 50:
                break
    return out


def _rle_schema(meta: object) -> str | None:
    exps = _expressions(meta)
    if any("anno_id" in e for e in exps):
        return "revos" if any("type_id" in e for e in exps) else "mevis"
    return None


def _steps_by_five(meta: object) -> bool:
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        return False
    for entry in meta["videos"].values():
        frames = entry.get("frames") if isinstance(entry, dict) else None
        if isinstance(frames, list) and len(frames) >= 2 and all(str(f).isdigit() for f in frames):
            nums = [int(f) for f in frames]
            return all(b - a == 5 for a, b in zip(nums, nums[1:]))
    return False


def detect_format(root: str | Path) -> str:
    """Name of the benchmark layout of `root` (one of `FORMATS`); `DatasetError` if none fits."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected a dataset root)")
    if revos.root_splits(root):
        return "revos"
    flat = root / "meta_expressions.json"
    if flat.is_file():
        meta = read_json(flat)
        if reasonvos.is_reasonvos_meta(meta):
            return "reasonvos"
        return _rle_schema(meta) or "refdavis"
    splits = ytvos.available_splits(root)
    if splits:
        # MeViS's server-scored `valid` split may carry neither anno_id nor mask_dict.json, so
        # every split gets a say before falling back to the PNG-annotated formats.
        metas = []
        for split in splits:
            mp = ytvos.meta_path(root, split)
            assert mp is not None
            meta = read_json(mp)
            rle = _rle_schema(meta)
            if rle:
                return rle
            if (root / split / "mask_dict.json").is_file():
                return "mevis"
            metas.append(meta)
        return "ytvos" if _steps_by_five(metas[0]) else "refdavis"
    raise DatasetError(f"{root}: unknown dataset layout; looked for {LOOKED_FOR}")


def load_dataset(root: str | Path, split: str | None = None, fmt: str | None = None) -> Dataset:
    """Load a referring-segmentation benchmark as a `Dataset` of `Sample`s.

    `fmt` (one of `FORMATS`, or a common spelling) skips detection; `split` defaults to the
    format's evaluation split (see each reader's docstring).
    """
    root = Path(root)
    name = normalize_format(fmt) if fmt else detect_format(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    return LOADERS[name](root, split)
