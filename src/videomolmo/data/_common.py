"""Helpers shared by the format readers: JSON schema checks, frame paths, expression metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from videomolmo.data.sample import read_json
from videomolmo.errors import DatasetError

FRAME_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def videos_of(meta: Any, path: Path) -> dict:
    """The `videos` mapping of a `meta_expressions.json`, checked for shape."""
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise DatasetError(f"{path}: expected a JSON object with a 'videos' mapping")
    return meta["videos"]


def frames_of(vid: str, entry: Any, path: Path) -> list[str]:
    """The listed frame names of one video entry."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{path}: video {vid!r} is not a JSON object")
    frames = entry.get("frames")
    if not isinstance(frames, list) or not all(isinstance(f, (str, int)) for f in frames):
        raise DatasetError(f"{path}: video {vid!r} has no 'frames' list of frame names")
    return [str(f) for f in frames]


def frame_paths(folder: Path, names: list[str]) -> list[Path]:
    """JPEG paths of the listed frames; the extension is taken from the first frame found on disk.

    One stat per video, not per frame: a missing frame is reported when it is read (or by
    `Dataset.validate()`), naming the file.
    """
    ext = ".jpg"
    if names:
        for cand in FRAME_EXTS:
            if (folder / f"{names[0]}{cand}").is_file():
                ext = cand
                break
    return [folder / f"{n}{ext}" for n in names]


def id_list(value: Any, what: str, where: str) -> list:
    """An id or list of ids (as stored: int or str) as a list; None means no ids."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    for v in items:
        if not isinstance(v, (int, str)) or isinstance(v, bool):
            raise DatasetError(f"{where}: {what} {v!r} is not an id")
    return items


def as_int_id(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: object id {value!r} is not an integer") from None


def extra_meta(exp: dict, known: set[str]) -> dict:
    """Expression fields a reader does not interpret itself (e.g. `kind`, `is_sent`), kept as meta."""
    return {k: v for k, v in exp.items() if k not in known}


@dataclass
class ExpressionEntry:
    """One expression of a ReferFormer-schema `meta_expressions.json`, with its video's frames."""

    vid: str
    entry: dict  # the video's JSON object
    names: list[str]  # listed frame names
    paths: list[Path]  # their JPEGs
    exp_id: str
    exp: dict  # the expression's JSON object (has a str 'exp')
    obj_ids: list
    where: str  # "<meta file>: video 'v' expression 'e'", for error messages


def iter_expressions(meta_file: Path, jpeg_dir: Path, meta: Any | None = None) -> Iterator[ExpressionEntry]:
    """Walk `{"videos": {vid: {"expressions": {id: {"exp", "obj_id", ...}}, "frames": [...]}}}`,
    checking its shape; shared by the Ref-DAVIS17 / Ref-YouTube-VOS and MeViS / ReVOS readers."""
    videos = videos_of(read_json(meta_file) if meta is None else meta, meta_file)
    for vid, entry in videos.items():
        names = frames_of(vid, entry, meta_file)
        exps = entry.get("expressions")
        if not isinstance(exps, dict):
            raise DatasetError(f"{meta_file}: video {vid!r} has no 'expressions' mapping")
        paths = frame_paths(jpeg_dir / vid, names)
        for exp_id, exp in exps.items():
            where = f"{meta_file}: video {vid!r} expression {exp_id!r}"
            if not isinstance(exp, dict) or not isinstance(exp.get("exp"), str):
                raise DatasetError(f"{where} has no 'exp' text")
            obj_ids = id_list(exp.get("obj_id"), "obj_id", where)
            yield ExpressionEntry(str(vid), entry, names, paths, str(exp_id), exp, obj_ids, where)
