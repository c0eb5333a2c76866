"""The sample type every benchmark reader returns, and the dataset that holds them.

A `Sample` is one referring expression on one video: the text, the referred object ids, the
listed frames, and a *mask source* that loads the ground-truth mask of a frame only when it is
asked for (a MeViS split holds tens of thousands of frames; nothing is decoded up front).

Mask sources are small picklable objects (no closures) so that samples can be shipped to worker
processes by `videomolmo.parallel.parallel_map`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from videomolmo.errors import DatasetError, MaskError
from videomolmo.masks import read_mask, rle_decode
from videomolmo.video import ImageSequenceVideo, open_video

__all__ = [
    "Sample",
    "Dataset",
    "PngMaskSource",
    "RleMaskSource",
    "NoMaskSource",
    "read_json",
    "image_size",
]


# --------------------------------------------------------------------------- small readers


def read_json(path: Path, what: str = "meta file") -> Any:
    """Parse a JSON file; a missing or malformed file is a `DatasetError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read {what} ({exc})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image from its header only (no decode)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: referenced frame is missing")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
    return h, w


# --------------------------------------------------------------------------- mask sources


def _union(masks: list[np.ndarray], where: str, frame_path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    if not masks:
        return np.zeros(size or image_size(frame_path), dtype=bool)
    out = masks[0].copy()
    for m in masks[1:]:
        if m.shape != out.shape:
            raise MaskError(f"{where}: object masks differ in size ({m.shape[1]}x{m.shape[0]} vs "
                            f"{out.shape[1]}x{out.shape[0]})")
        out |= m
    return out


@dataclass(frozen=True)
class NoMaskSource:
    """A split without ground truth (Ref-YouTube-VOS valid, MeViS valid)."""

    where: str

    has_masks = False

    def object_masks(self, i: int, frame_path: Path) -> list[np.ndarray]:
        raise DatasetError(f"{self.where}: this split has no ground-truth masks")

    def mask(self, i: int, frame_path: Path) -> np.ndarray:
        raise DatasetError(f"{self.where}: this split has no ground-truth masks")


@dataclass(frozen=True)
class PngMaskSource:
    """Masks stored as PNG files: per frame, one (png path, object id) per referred object; the
    GT is their union.

    An object id of `None` takes every non-zero pixel of that PNG. A frame with no entries is
    an empty mask of the frame's size.
    """

    frames: tuple[tuple[tuple[str, int | None], ...], ...]

    has_masks = True

    def object_masks(self, i: int, frame_path: Path) -> list[np.ndarray]:
        out = []
        for png, obj_id in self.frames[i]:
            if not os.path.isfile(png):
                raise DatasetError(f"{png}: referenced mask file is missing")
            # masks.read_mask owns the id rule: palette ids compare exactly, a 0/255 L-mode PNG
            # is one object (id 1), None = every non-zero pixel
            out.append(read_mask(png, "any" if obj_id is None else obj_id))
        return out

    def mask(self, i: int, frame_path: Path) -> np.ndarray:
        where = self.frames[i][0][0] if self.frames[i] else str(frame_path)
        return _union(self.object_masks(i, frame_path), where, frame_path)


@dataclass(frozen=True)
class RleMaskSource:
    """Masks stored as COCO RLE (MeViS / ReVOS `mask_dict.json`): per referred annotation, one
    RLE (or `None` where the object is absent) per listed frame; the GT is their union."""

    rles: tuple[tuple[dict | None, ...], ...]  # [annotation][frame]
    where: str = "mask_dict.json"
    size: tuple[int, int] | None = None

    has_masks = True

    def _decode(self, rle: dict, i: int) -> np.ndarray:
        try:
            # masks.rle_decode validates the runs before pycocotools' C decoder sees them
            return rle_decode(rle)
        except MaskError as exc:
            raise DatasetError(f"{self.where}: frame index {i}: {exc}") from None

    def object_masks(self, i: int, frame_path: Path) -> list[np.ndarray]:
        out: list[np.ndarray | None] = []
        for k, per_frame in enumerate(self.rles):
            if i >= len(per_frame):
                raise DatasetError(f"{self.where}: annotation {k} has {len(per_frame)} masks, "
                                   f"frame index {i} is out of range")
            out.append(None if per_frame[i] is None else self._decode(per_frame[i], i))
        present = [m for m in out if m is not None]
        size = present[0].shape if present else (self.size or image_size(frame_path))
        return [np.zeros(size, dtype=bool) if m is None else m for m in out]

    def mask(self, i: int, frame_path: Path) -> np.ndarray:
        return _union(self.object_masks(i, frame_path), self.where, frame_path, self.size)


MaskSource = NoMaskSource | PngMaskSource | RleMaskSource


# --------------------------------------------------------------------------- sample


@dataclass(eq=False)  # identity: samples hold arrays and lazy sources, value equality is meaningless
class Sample:
    """One referring expression on one video, with lazily loaded ground truth.

    `frame_names` are the listed (annotated) frames in order, `frame_paths` their JPEGs.
    `gt_mask(i)` is the union of every referred object on frame `i` (bool (H, W)); an object
    absent from a frame contributes nothing, so a frame where no referred object is visible is
    an all-False mask. `gt_points` is per frame an (N, 2) pixel array (x, y) or None, for
    folders that ship points (`points.json` of the synthetic MeViS-layout sets; none of the five
    mask benchmarks do).
    """

    video_id: str
    exp_id: str
    expression: str
    obj_ids: list
    frame_names: list[str]
    frame_paths: list[Path]
    masks: MaskSource = field(repr=False)
    gt_points: list[np.ndarray | None] | None = field(default=None, repr=False)
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Sample(video_id={self.video_id!r}, exp_id={self.exp_id!r}, expression={self.expression!r}, "
                f"obj_ids={self.obj_ids!r}, frames={len(self.frame_names)}, has_masks={self.has_masks}, "
                f"meta={self.meta!r})")

    @property
    def key(self) -> tuple[str, str]:
        return (self.video_id, self.exp_id)

    @property
    def has_masks(self) -> bool:
        """False for splits released without ground truth (evaluation server only)."""
        return self.masks.has_masks

    def __len__(self) -> int:
        return len(self.frame_names)

    def video(self):
        """The listed frames, in order, as a `videomolmo.video.Video` (decoded on access).

        The frame folder itself when it holds exactly the listed frames, else a video over just
        the listed files (Ref-YouTube-VOS and friends list a subset of a folder's frames).
        """
        missing = [p for p in self.frame_paths if not Path(p).is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: referenced frame is missing "
                               f"({len(missing)} of {len(self.frame_paths)} frames of {self.video_id})")
        folders = {Path(p).parent for p in self.frame_paths}
        if len(folders) == 1:
            video = open_video(folders.pop())
            if list(video.frame_names) == list(self.frame_names):
                return video
            video.close()
        return ImageSequenceVideo(self.frame_paths, frame_names=self.frame_names)

    def gt_mask(self, i: int) -> np.ndarray:
        """Ground-truth mask of listed frame `i`: bool (H, W), union of all referred objects."""
        if not -len(self.frame_names) <= i < len(self.frame_names):
            raise IndexError(f"frame index {i} out of range for {len(self.frame_names)} frames")
        i %= len(self.frame_names)
        return self.masks.mask(i, Path(self.frame_paths[i]))

    def gt_object_masks(self, i: int) -> list[np.ndarray]:
        """Ground truth of frame `i` per referred object (bool (H, W) each, in `obj_ids` order;
        all-False where that object is absent)."""
        if not -len(self.frame_names) <= i < len(self.frame_names):
            raise IndexError(f"frame index {i} out of range for {len(self.frame_names)} frames")
        i %= len(self.frame_names)
        return self.masks.object_masks(i, Path(self.frame_paths[i]))

    def gt_masks(self) -> np.ndarray:
        """All ground-truth masks: bool (T, H, W)."""
        frames = [self.gt_mask(i) for i in range(len(self.frame_names))]
        shapes = {m.shape for m in frames}
        if len(shapes) > 1:
            raise MaskError(f"{self.video_id}/{self.exp_id}: ground-truth masks differ in size {sorted(shapes)}")
        return np.stack(frames) if frames else np.zeros((0, 0, 0), dtype=bool)


# --------------------------------------------------------------------------- dataset


class Dataset(Sequence[Sample]):
    """An ordered collection of samples, addressable by index or by `(video, exp_id)`."""

    def __init__(self, samples: list[Sample], *, root: Path, split: str | None, fmt: str):
        self.root = Path(root)
        self.split = split
        self.format = fmt
        self._samples = list(samples)
        self._index: dict[tuple[str, str], int] = {}
        for k, s in enumerate(self._samples):
            if s.key in self._index:
                raise DatasetError(f"{self.root}: expression {s.exp_id!r} of video {s.video_id!r} appears twice")
            self._index[s.key] = k

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return (f"Dataset({self.format}, {str(self.root)!r}{split}: {len(self.videos())} videos, "
                f"{len(self)} expressions)")

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    @overload
    def __getitem__(self, key: int) -> Sample: ...
    @overload
    def __getitem__(self, key: tuple[str, str]) -> Sample: ...
    @overload
    def __getitem__(self, key: slice) -> list[Sample]: ...

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self.get(*key)
        return self._samples[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, tuple) and len(key) == 2:
            return (str(key[0]), str(key[1])) in self._index
        return key in self._samples

    def get(self, video: str, exp_id: str | int) -> Sample:
        """The sample of expression `exp_id` on `video`; `KeyError` if there is none."""
        k = self._index.get((str(video), str(exp_id)))
        if k is None:
            raise KeyError(f"no expression {exp_id!r} on video {video!r} in {self.root}")
        return self._samples[k]

    def videos(self) -> list[str]:
        """Video ids in dataset order, each once."""
        return list(dict.fromkeys(s.video_id for s in self._samples))

    def expressions(self, video: str) -> list[Sample]:
        """All samples on one video."""
        return [s for s in self._samples if s.video_id == video]

    @property
    def has_masks(self) -> bool:
        return bool(self._samples) and all(s.has_masks for s in self._samples)

    def validate(self) -> None:
        """Check that every listed frame and mask file exists (stat only, no decoding)."""
        for s in self._samples:
            for p in s.frame_paths:
                if not os.path.isfile(p):
                    raise DatasetError(f"{p}: referenced frame is missing ({s.video_id})")
            if isinstance(s.masks, PngMaskSource):
                for entries in s.masks.frames:
                    for png, _ in entries:
                        if not os.path.isfile(png):
                            raise DatasetError(f"{png}: referenced mask file is missing ({s.video_id})")
            if isinstance(s.masks, RleMaskSource):
                for k, per_frame in enumerate(s.masks.rles):
                    if len(per_frame) != len(s.frame_names):
                        raise DatasetError(f"{s.masks.where}: annotation {k} of {s.video_id}/{s.exp_id} has "
                                           f"{len(per_frame)} masks for {len(s.frame_names)} frames")
