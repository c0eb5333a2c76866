"""Mask I/O: DAVIS PNGs, COCO RLE, and the referring-VOS submission layout.

Reading DAVIS-style annotations
-------------------------------
`read_mask(path)` returns the object-id map stored in the PNG: palette (P) images give their
palette indices (DAVIS 2017, YouTube-VOS), grayscale (L) images their gray values. Selecting an
object (`read_mask(path, obj_id)` or `select_object(ids, obj_id)`) follows one rule:

* an int (or a digit string such as ``"1"`` from ``meta_expressions.json``): pixels equal to it;
* **except** that a non-palette map whose only non-zero value is 255 is a DAVIS-2016-style
  single-object mask (0/255): there every non-zero pixel is object 1 (and 255 selects them too);
* ``"any"`` / ``"foreground"``: every non-zero pixel (see `foreground`);
* a list of ids: the union of those objects (MeViS-style multi-object expressions).

Writing
-------
`write_mask` writes a binary mask as a 0/255 L-mode PNG (the submission format of MeViS,
Ref-YouTube-VOS and ReferFormer); `write_id_mask` writes an object-id map as a P-mode PNG with
the DAVIS palette. Every write is atomic: temp file in the same folder, then `os.replace`.

COCO RLE
--------
`rle_encode` / `rle_decode` wrap pycocotools (column-major, "Fortran" order). Decoding checks
that the run lengths add up to ``h * w`` before handing them to pycocotools, whose C decoder
would otherwise write past its buffer on a corrupt annotation.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from videomolmo.files import atomic_path
from videomolmo.errors import ConfigError, MaskError

__all__ = [
    "DAVIS_PALETTE",
    "check_same_size",
    "davis_palette",
    "foreground",
    "read_mask",
    "resize_mask",
    "rle_area",
    "rle_decode",
    "rle_encode",
    "select_object",
    "submission_path",
    "write_id_mask",
    "write_mask",
    "write_submission_mask",
]

#: An object selector: an id, a digit string ("1"), "any", a list of ids, or None (raw map).
ObjId = Union[int, str, Sequence[int], None]


def davis_palette() -> np.ndarray:
    """The 256-colour palette of DAVIS / YouTube-VOS annotation PNGs (the PASCAL VOC colormap).

    Id ``i`` spreads its bits over the top bits of R, G, B: 1 -> (128, 0, 0), 2 -> (0, 128, 0).
    """
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


#: ``(256, 3)`` uint8: colour of each object id in DAVIS palette PNGs.
DAVIS_PALETTE = davis_palette()

_ANY = ("any", "foreground", "all")


# --------------------------------------------------------------------------- reading


def _open_ids(path: Path) -> tuple[np.ndarray, bool]:
    """(object-id map, whether it came from a palette image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "P":
                return np.array(im, dtype=np.uint8), True
            if mode == "L":
                return np.array(im, dtype=np.uint8), False
            if mode == "1":
                return np.array(im, dtype=np.uint8) * 255, False
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.array(im).astype(np.int32), False
            if mode == "LA":
                return np.array(im.getchannel("L"), dtype=np.uint8), False
            if mode in ("RGB", "RGBA"):
                rgb = np.array(im.convert("RGB"))
                return _ids_from_rgb(path, rgb), False
            raise MaskError(f"{path}: unsupported mask image mode {mode!r} (expected P, L or 1)")
    except FileNotFoundError:
        raise MaskError(f"{path}: no such mask file") from None
    except IsADirectoryError:
        raise MaskError(f"{path}: is a folder, not a mask PNG") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MaskError(f"{path}: unreadable mask PNG ({exc.__class__.__name__}: {exc})") from None


def _ids_from_rgb(path: Path, rgb: np.ndarray) -> np.ndarray:
    """Gray RGB -> its gray values; DAVIS-coloured RGB -> palette ids; anything else is an error."""
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy()
    key = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pal = DAVIS_PALETTE.astype(np.int32)
    pal_key = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    colours, inverse = np.unique(key, return_inverse=True)
    lookup = {int(k): i for i, k in enumerate(pal_key)}
    ids = np.empty(len(colours), dtype=np.uint8)
    for n, colour in enumerate(colours.tolist()):
        if colour not in lookup:
            raise MaskError(
                f"{path}: RGB mask has colour {((colour >> 16) & 255, (colour >> 8) & 255, colour & 255)} "
                "that is not in the DAVIS palette; save masks as P or L mode PNGs"
            )
        ids[n] = lookup[colour]
    return ids[inverse.reshape(rgb.shape[:2])]


def _is_binary_255(ids: np.ndarray) -> bool:
    # Cheap test first: any value other than 0/255 rules it out without np.unique.
    return bool(((ids == 0) | (ids == 255)).all())


def select_object(ids: np.ndarray, obj_id: ObjId = "any", palette: bool = False) -> np.ndarray:
    """Boolean mask of `obj_id` in an object-id map (see the module docstring for the rule).

    Args:
        ids: ``(H, W)`` integer object-id map.
        obj_id: int / digit string, ``"any"`` (or None), or a list of ids (union).
        palette: whether `ids` are palette indices (then 255 is an ordinary id, never 0/255).
    """
    ids = np.asarray(ids)
    if obj_id is None or (isinstance(obj_id, str) and obj_id.lower() in _ANY):
        return ids != 0
    if isinstance(obj_id, (list, tuple, set, frozenset, np.ndarray)):
        wanted = [_parse_id(o) for o in obj_id]
        if not wanted:
            return np.zeros(ids.shape, dtype=bool)
        if not palette and 1 in wanted and _is_binary_255(ids):
            return ids != 0
        return np.isin(ids, wanted)
    oid = _parse_id(obj_id)
    if not palette and oid in (1, 255) and _is_binary_255(ids):
        return ids != 0
    return ids == oid


def _parse_id(obj_id) -> int:
    if isinstance(obj_id, (bool, np.bool_)):
        raise ConfigError(f"object id must be an integer, got {obj_id!r}")
    if isinstance(obj_id, (int, np.integer)):
        value = int(obj_id)
    elif isinstance(obj_id, str) and re.fullmatch(r"\s*\d+\s*", obj_id):
        value = int(obj_id)
    else:
        raise ConfigError(f"object id must be an integer, a digit string or 'any', got {obj_id!r}")
    if value < 0:
        raise ConfigError(f"object id must be >= 0, got {obj_id!r}")
    return value


def read_mask(path: str | os.PathLike, obj_id: ObjId = None) -> np.ndarray:
    """Read a DAVIS-style annotation PNG.

    Args:
        path: PNG in palette (P), grayscale (L), 1-bit, 16-bit or DAVIS-coloured RGB mode.
        obj_id: None -> the raw object-id map (uint8, or int32 for 16-bit PNGs); an int or digit
            string -> bool mask of that object (0/255 single-object PNGs: 1 selects the 255
            pixels); ``"any"`` -> every non-zero pixel; a list -> union of those objects.

    Raises:
        MaskError: missing file, unreadable/corrupt PNG, unsupported mode.
    """
    path = Path(path)
    ids, palette = _open_ids(path)
    if obj_id is None:
        return ids
    return select_object(ids, obj_id, palette=palette)


def foreground(path: str | os.PathLike) -> np.ndarray:
    """Every non-zero pixel of an annotation PNG, as a bool ``(H, W)`` mask."""
    return read_mask(path, "any")


# --------------------------------------------------------------------------- writing


def _atomic_png(path: Path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            image.save(tmp, format="PNG")
    except OSError as exc:
        raise MaskError(f"{path}: cannot write mask PNG ({exc.strerror or exc})") from None


def _as_binary(mask: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskError(f"{where}: mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MaskError(f"{where}: mask must be bool or numeric, got dtype {arr.dtype}")
    # 0/1 and 0/255 both mean "non-zero is the object"; anything else is probably an id map.
    if not ((arr == 0) | (arr == 1) | (arr == 255)).all():
        values = np.unique(arr)
        raise MaskError(
            f"{where}: mask must be binary (bool, 0/1 or 0/255), got values {values[:6].tolist()}"
            " -- use write_id_mask for object-id maps"
        )
    return arr != 0


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> Path:
    """Write a binary mask as a 0/255 L-mode PNG, atomically. Returns the path."""
    from PIL import Image

    path = Path(path)
    binary = _as_binary(mask, str(path))
    _atomic_png(path, Image.fromarray(binary.astype(np.uint8) * 255, mode="L"))
    return path


def write_id_mask(path: str | os.PathLike, ids: np.ndarray, palette: np.ndarray | None = None) -> Path:
    """Write an object-id map (0 = background, 1..255 objects) as a P-mode PNG, atomically.

    `palette` is ``(N <= 256, 3)`` uint8; the DAVIS palette by default.
    """
    from PIL import Image

    path = Path(path)
    arr = np.asarray(ids)
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise MaskError(f"{path}: object-id map must be a 2-D integer array, got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise MaskError(f"{path}: object ids must be in 0..255 for a palette PNG, got {arr.min()}..{arr.max()}")
    pal = DAVIS_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3 or not 1 <= len(pal) <= 256:
        raise ConfigError(f"palette must be (N <= 256, 3) uint8, got shape {pal.shape}")
    image = Image.fromarray(arr.astype(np.uint8), mode="L").convert("P")
    image.putpalette(pal.reshape(-1).tolist())
    _atomic_png(path, image)
    return path


# --------------------------------------------------------------------------- COCO RLE


def rle_encode(mask: np.ndarray) -> dict:
    """Binary ``(H, W)`` mask -> COCO compressed RLE ``{"size": [h, w], "counts": str}``.

    JSON-ready (counts decoded to ASCII); column-major like every COCO tool.
    """
    from pycocotools import mask as mask_utils

    binary = _as_binary(mask, "rle_encode")
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    counts = rle["counts"]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts.decode("ascii")}


def _counts_from_string(s: bytes) -> np.ndarray:
    """Run lengths of a COCO compressed-RLE string (the inverse of pycocotools' rleToString).

    Each count is a little-endian run of 5-bit groups offset by 48 ('0'); bit 0x20 says another
    group follows, bit 0x10 of the last group is the sign. From the fourth count on, values are
    stored as differences to the count two places earlier.
    """
    c = np.frombuffer(s, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (c < 0).any() or (c > 63).any():
        raise ValueError("characters outside the RLE alphabet")
    last = (c & 0x20) == 0
    if not last[-1]:
        raise ValueError("the last run length is cut short")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:  # 12 groups = 60 bits: anything longer is not a real count
        raise ValueError("run length too long")
    k = np.arange(c.size) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    x = x - np.where(negative, np.left_shift(np.int64(1), 5 * lengths), 0)
    counts = x.copy()
    # counts[m] += counts[m - 2] for m > 2: two interleaved running sums.
    counts[3::2] = np.cumsum(np.concatenate([counts[1:2], x[3::2]]))[1:] if counts.size > 3 else counts[3::2]
    counts[4::2] = np.cumsum(np.concatenate([counts[2:3], x[4::2]]))[1:] if counts.size > 4 else counts[4::2]
    return counts


def _check_rle(rle, shape: tuple[int, int] | None) -> tuple[dict, int, int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise MaskError(f"RLE must be a dict with 'size' and 'counts', got {_brief(rle)}")
    size = rle["size"]
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise MaskError(f"RLE 'size' must be [height, width], got {_brief(size)}") from None
    if h < 0 or w < 0:
        raise MaskError(f"RLE 'size' must be non-negative, got {size}")
    if shape is not None and (h, w) != tuple(shape):
        raise MaskError(f"RLE size {h}x{w} (h x w) does not match the expected {shape[0]}x{shape[1]}")
    counts = rle["counts"]
    if isinstance(counts, (list, tuple, np.ndarray)):
        try:
            runs = np.asarray(counts, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise MaskError(f"RLE 'counts' list must hold integers, got {_brief(counts)}") from None
        problem = _runs_problem(runs, h, w)
        if problem:
            raise MaskError(f"uncompressed RLE of size {h}x{w}: {problem}")
        from pycocotools import mask as mask_utils

        return mask_utils.frPyObjects({"size": [h, w], "counts": [int(r) for r in runs]}, h, w), h, w
    if isinstance(counts, str):
        raw = counts.encode("ascii", errors="replace")
    elif isinstance(counts, (bytes, bytearray)):
        raw = bytes(counts)
    else:
        raise MaskError(f"RLE 'counts' must be a string, bytes or a list, got {type(counts).__name__}")
    try:
        runs = _counts_from_string(raw)
    except ValueError as exc:
        raise MaskError(f"corrupt RLE counts string ({exc})") from None
    problem = _runs_problem(runs, h, w)
    if problem:
        raise MaskError(f"corrupt RLE of size {h}x{w}: {problem}")
    return {"size": [h, w], "counts": raw}, h, w


def _runs_problem(runs: np.ndarray, h: int, w: int) -> str | None:
    if (runs < 0).any():
        return "negative run length"
    if (runs >= 2**32).any():
        return "run length too large"
    total = int(runs.sum())
    if total != h * w:
        return f"run lengths add up to {total}, not {h * w} pixels"
    return None


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def rle_decode(rle: dict | None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """COCO RLE -> bool ``(H, W)`` mask.

    Accepts compressed counts as ``str`` or ``bytes`` and the uncompressed list form
    (``{"size": [h, w], "counts": [runs...]}``). ``None`` (MeViS "no mask in this frame") gives
    an empty mask when `shape` ``(h, w)`` is known. With `shape`, a different RLE size raises.

    Raises:
        MaskError: malformed RLE (missing keys, corrupt counts, runs not covering h*w pixels).
    """
    from pycocotools import mask as mask_utils

    if rle is None:
        if shape is None:
            raise MaskError("RLE is null and no mask shape was given")
        return np.zeros(tuple(shape), dtype=bool)
    coco, h, w = _check_rle(rle, shape)
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=bool)
    with warnings.catch_warnings():
        # pycocotools' Cython wrapper predates NumPy 2's `copy=` protocol; the result is fine.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(coco).astype(bool)


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of an RLE, without decoding it."""
    from pycocotools import mask as mask_utils

    coco, _, _ = _check_rle(rle, None)
    return int(mask_utils.area(coco))


# --------------------------------------------------------------------------- submission layout

_FRAME_EXT = re.compile(r"\.(png|jpe?g)$", re.IGNORECASE)


def _safe_part(value, what: str, allow_slash: bool = False) -> str:
    text = str(value)
    parts = text.split("/") if allow_slash else [text]
    if (
        not text
        or "\\" in text
        or "\x00" in text
        or text.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or (not allow_slash and "/" in text)
    ):
        raise ConfigError(f"{what} {value!r} cannot be used as a path component")
    return text


def submission_path(out_dir: str | os.PathLike, video: str, exp_id: str | int, frame_name: str) -> Path:
    """``<out>/<video>/<exp_id>/<frame>.png``, the MeViS / Ref-YouTube-VOS / ReferFormer layout.

    `frame_name` may carry an image extension (``00005.jpg`` -> ``00005.png``). Video keys may
    be path-like (ReVOS: ``"LVVIS/train/00001"``); ``..`` and absolute parts are refused.
    """
    video_part = _safe_part(video, "video name", allow_slash=True)
    exp_part = _safe_part(exp_id, "expression id")
    frame_part = _safe_part(_FRAME_EXT.sub("", str(frame_name)), "frame name")
    return Path(out_dir) / video_part / exp_part / f"{frame_part}.png"


def write_submission_mask(
    out_dir: str | os.PathLike,
    video: str,
    exp_id: str | int,
    frame_name: str,
    mask: np.ndarray,
) -> Path:
    """Write one predicted frame mask into the submission layout (0/255 L-mode, atomic)."""
    return write_mask(submission_path(out_dir, video, exp_id, frame_name), mask)


# --------------------------------------------------------------------------- checks and resizing


def check_same_size(gt: np.ndarray, pred: np.ndarray, name: str | os.PathLike) -> None:
    """Raise `MaskError` naming `name` when prediction and ground truth differ in size."""
    gs, ps = np.shape(gt), np.shape(pred)
    if gs != ps:
        def fmt(s):
            return f"{s[-1]}x{s[-2]}" if len(s) >= 2 else str(s)

        raise MaskError(
            f"{name}: prediction is {fmt(ps)} but the ground truth is {fmt(gs)} (width x height)"
        )


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool or id mask to `size` = ``(width, height)``."""
    import cv2

    arr = np.asarray(mask)
    w, h = (int(s) for s in size)
    if w <= 0 or h <= 0:
        raise ConfigError(f"mask size must be positive, got {size}")
    if arr.shape[:2] == (h, w):
        return arr.copy()
    src = arr.astype(np.uint8) if arr.dtype == bool else arr
    if src.dtype not in (np.uint8, np.uint16, np.int16, np.int32, np.float32):
        src = src.astype(np.int32)
    out = cv2.resize(src, (w, h), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool) if arr.dtype == bool else out.astype(arr.dtype)
