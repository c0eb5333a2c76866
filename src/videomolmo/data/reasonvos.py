"""ReasonVOS reader (VideoLISA's reasoning benchmark; one evaluation split).

Layout::

    <root>/meta_expressions.json
    <root>/JPEGImages/<video>/<frame>.jpg
    <root>/Annotations/<source>_<video>_<obj_id>/<frame>.png     binary masks, one folder per object

`meta_expressions.json` lists each video's expressions as a *list*::

    {"videos": {"<video>": {"source": "MeViS", "frames": ["00000", ...],
                            "expressions": [{"exp_id": 0, "exp_text": "what ...?", "obj_id": 2,
                                             "is_sent": 1}, ...]}}}

An expression may also carry its own `source` / `video` (they then take precedence). The mask
folder name uses the source as written; VideoLISA's checker lower-cases it, so a lower-case
folder is used when only that one exists. Every non-zero pixel of a mask PNG is foreground and
a frame without a PNG in the object's folder is an error naming the file. Some releases repeat
an `exp_id` within a video; the later duplicates get the next free integer ids (the original is
kept in `meta["original_exp_id"]`) so that `(video, exp_id)` stays unique. The
already-converted "v2" dict form (`expressions` as `{exp_id: {"exp"|"exp_text", "obj_id"}}`)
is read too.
"""

from __future__ import annotations

from pathlib import Path

from videomolmo.data._common import extra_meta, frame_paths, frames_of, id_list, videos_of
from videomolmo.data.sample import Dataset, PngMaskSource, Sample, read_json
from videomolmo.errors import DatasetError

FORMAT = "reasonvos"
KNOWN_KEYS = {"exp_id", "exp_text", "exp", "obj_id", "source", "video"}


def is_reasonvos_meta(meta: object) -> bool:
    """True when some video lists its expressions as a list of `exp_text` dicts."""
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        return False
    for entry in meta["videos"].values():
        if isinstance(entry, dict):
            exps = entry.get("expressions")
            if isinstance(exps, list):
                return True
            if isinstance(exps, dict):
                return any(isinstance(e, dict) and "exp_text" in e for e in exps.values())
    return False


def _mask_folder(ann_dir: Path, source: str, vid: str, obj_id) -> Path:
    name = f"{source}_{vid}_{obj_id}"
    folder = ann_dir / name
    if not folder.is_dir():
        lower = ann_dir / f"{source.lower()}_{vid}_{obj_id}"
        if lower.is_dir():
            return lower
    return folder


def load(root: Path, split: str | None = None) -> Dataset:
    """Load ReasonVOS (see the module docstring for the layout)."""
    root = Path(root)
    if split is not None:
        raise DatasetError(f"{root}: ReasonVOS has a single split, got split {split!r}")
    meta_file = root / "meta_expressions.json"
    videos = videos_of(read_json(meta_file), meta_file)
    ann_dir = root / "Annotations"
    samples: list[Sample] = []
    for vid, entry in videos.items():
        names = frames_of(vid, entry, meta_file)
        exps = entry.get("expressions")
        if isinstance(exps, dict):
            items = [(str(k), e) for k, e in exps.items()]
        elif isinstance(exps, list):
            items = []
            for k, e in enumerate(exps):
                items.append((str(e.get("exp_id", k)) if isinstance(e, dict) else str(k), e))
        else:
            raise DatasetError(f"{meta_file}: video {vid!r} has no 'expressions' list")
        # Duplicate exp_ids: later ones take the next free integer id.
        taken = {k for k, _ in items}
        seen: set[str] = set()
        next_free = max((int(k) for k in taken if k.lstrip("-").isdigit()), default=-1) + 1
        for exp_id, exp in items:
            original = exp_id
            if exp_id in seen:
                while str(next_free) in taken:
                    next_free += 1
                exp_id = str(next_free)
                taken.add(exp_id)
            seen.add(exp_id)
            where = f"{meta_file}: video {vid!r} expression {original!r}"
            if not isinstance(exp, dict):
                raise DatasetError(f"{where} is not a JSON object")
            text = exp.get("exp_text", exp.get("exp"))
            if not isinstance(text, str):
                raise DatasetError(f"{where} has no 'exp_text'")
            source = exp.get("source", entry.get("source"))
            if not isinstance(source, str):
                raise DatasetError(f"{where}: no 'source' dataset name (needed for the mask folder)")
            video_name = str(exp.get("video", vid))
            obj_ids = id_list(exp.get("obj_id"), "obj_id", where)
            folders = [_mask_folder(ann_dir, source, video_name, o) for o in obj_ids]
            masks = PngMaskSource(tuple(tuple((str(f / f"{n}.png"), None) for f in folders) for n in names))
            meta = {"format": FORMAT, "split": None, "source": source, **extra_meta(exp, KNOWN_KEYS)}
            if exp_id != original:
                meta["original_exp_id"] = original
            samples.append(Sample(
                video_id=str(vid), exp_id=exp_id, expression=text, obj_ids=obj_ids,
                frame_names=names, frame_paths=frame_paths(root / "JPEGImages" / vid, names),
                masks=masks, meta=meta,
            ))
    return Dataset(samples, root=root, split=None, fmt=FORMAT)
