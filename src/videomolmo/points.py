"""Molmo's point-text codec and percent <-> pixel conversion.

Molmo answers a pointing question with XML-like text whose coordinates are percentages of the
image width and height (0-100, one decimal)::

    <point x="12.3" y="45.6" alt="dog">dog</point>
    <points x1="10.0" y1="20.0" x2="30.5" y2="40.1" alt="dogs">dogs</points>
    There are none.

`format_points` reproduces Molmo's training-data formatter (`points_to_text` in the Molmo data
pipeline) to the character: pixels are divided by `(w / 100, h / 100)`, rounded as Molmo's
`round(v, 1)` rounds NumPy floats (NumPy's rounding, not Python's: 0.35 -> 0.4), sorted by the
key `x * 10000 + y` (x first, then y) and printed with `:0.1f`.

`parse_points` is deliberately lenient because it reads model output: it accepts both tag
forms, attributes in any order, several tags, surrounding prose, missing quotes, escaped quotes
(`x=\\"1\\"` as found in JSON dumps) and truncated generations (only complete coordinate pairs are
kept). Like Molmo's own `extract_points`, a point with a value above 100 is dropped; so are
negative, NaN and infinite values. When the text holds at least one `<point`/`<points` tag only
tag attributes are read (label text such as `alt="x=3"` is ignored); without any tag, bare
`x=.. y=..` pairs in the prose are read, as Molmo's regex does. It never raises on any string.

Arrays follow the package contract: `(N, 2)` float64, columns `(x, y)`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from videomolmo.errors import ConfigError, VideoMolmoError

__all__ = [
    "NO_POINTS_TEXT",
    "format_points",
    "format_points_percent",
    "parse_points",
    "parse_points_percent",
    "percent_to_pixel",
    "pixel_to_percent",
]

#: Molmo's answer when the referred object is absent.
NO_POINTS_TEXT = "There are none."

# An x/y attribute, optionally indexed (x1, y12), anywhere in the text. The value may be quoted
# with " or ', with a JSON-escaped quote (\"), or bare. The look-behind stops matching inside
# words such as "max=" or "index=".
_ATTR = re.compile(
    r"""(?<![A-Za-z0-9_])([xy])(\d*)\s*=\s*"""
    r"""(?:(\\?["'])(?P<q>[^"'\\<>]*?)(\\?["'])|(?P<bare>[^\s"'\\<>/,;)]+)(?=[\s<>/,;)]))"""
)
# Everything that opens a point tag starts a new group of attributes: pairs never straddle tags.
_TAG_START = re.compile(r"<\s*points?\b", re.IGNORECASE)
# Label text inside alt="..." must not be mistaken for coordinates.
_ALT_VALUE = re.compile(r"""\balt\s*=\s*\\?"[^"]*\\?"|\balt\s*=\s*'[^']*'""")


def _as_points(points: Iterable | np.ndarray, name: str = "points") -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) as (x, y); got {arr.shape}")
    return arr


def _check_size(width: float, height: float) -> tuple[float, float]:
    try:
        w, h = float(width), float(height)
    except (TypeError, ValueError):
        raise ConfigError(f"image size must be numbers, got width={width!r} height={height!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0):
        raise ConfigError(f"image size must be positive, got width={width!r} height={height!r}")
    return w, h


def pixel_to_percent(points: Iterable | np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel `(x, y)` -> percent of the image size (0-100), as Molmo computes it.

    Molmo divides by `(w / 100, h / 100)`; we do the same so rounding ties match its output.
    """
    w, h = _check_size(width, height)
    pts = _as_points(points)
    return pts / np.array([w / 100.0, h / 100.0])[None, :]


def percent_to_pixel(points: Iterable | np.ndarray, width: float, height: float) -> np.ndarray:
    """Percent `(x, y)` (0-100) -> pixel coordinates of a `width` x `height` image."""
    w, h = _check_size(width, height)
    pts = _as_points(points)
    return pts * np.array([w / 100.0, h / 100.0])[None, :]


def _check_decimals(decimals: int) -> int:
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)) or not 0 <= decimals <= 6:
        raise ConfigError(f"decimals must be an integer in 0..6, got {decimals!r}")
    return int(decimals)


def format_points_percent(
    points_pct: Iterable | np.ndarray,
    label: str = "object",
    alt: str | None = None,
    decimals: int = 1,
) -> str:
    """Format percent points (0-100) as Molmo point text; see `format_points`."""
    decimals = _check_decimals(decimals)
    pts = _as_points(points_pct)
    if len(pts) == 0:
        return NO_POINTS_TEXT
    if not np.isfinite(pts).all():
        raise ValueError(f"points must be finite, got {pts[~np.isfinite(pts).all(axis=1)].tolist()}")
    # NumPy rounding (scale, rint, unscale), as Molmo rounds np.float64 values: it differs from
    # Python's round() on float, e.g. 0.35 -> 0.4 here but 0.3 with round(0.35, 1).
    # `+ 0.0` turns -0.0 into 0.0 so a point a hair left of the border prints as "0.0".
    rounded = [[float(v) + 0.0 for v in row] for row in np.round(pts, decimals)]
    bad = [p for p in rounded if not (0.0 <= p[0] <= 100.0 and 0.0 <= p[1] <= 100.0)]
    if bad:
        raise ValueError(f"points must lie inside the image (0-100 percent), got {bad[:3]}")
    # Molmo's own sort key; equals (x, y) lexicographic order for values in 0..100.
    rounded.sort(key=lambda p: p[0] * 10000 + p[1])
    alt_text = label if alt is None else alt
    fmt = f"0.{decimals}f"
    if len(rounded) == 1:
        x, y = rounded[0]
        return f'<point x="{x:{fmt}}" y="{y:{fmt}}" alt="{alt_text}">{label}</point>'
    attrs = " ".join(
        f'x{i}="{x:{fmt}}" y{i}="{y:{fmt}}"' for i, (x, y) in enumerate(rounded, start=1)
    )
    return f'<points {attrs} alt="{alt_text}">{label}</points>'


def format_points(
    points_px: Iterable | np.ndarray,
    width: float,
    height: float,
    label: str = "object",
    alt: str | None = None,
    decimals: int = 1,
) -> str:
    """Pixel points -> Molmo point text, exactly as Molmo's `points_to_text` writes it.

    Args:
        points_px: `(N, 2)` pixel `(x, y)` in a `width` x `height` frame; `N = 0` gives
            `"There are none."`.
        label: the text between the tags (Molmo uses the lower-cased query label).
        alt: the `alt` attribute; defaults to `label` as in Molmo.
        decimals: digits after the point (Molmo: 1). `0` gives integer percents, still valid
            Molmo syntax, used by small models to shorten the answer.

    Raises:
        ValueError: non-finite points or points outside the image.
        ConfigError: a non-positive image size or `decimals` outside 0..6.
    """
    pct = pixel_to_percent(points_px, width, height)
    return format_points_percent(pct, label=label, alt=alt, decimals=decimals)


def _to_float(raw: str) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    # Drops NaN/inf and values outside 0..100, as Molmo's extract_points drops > 100.
    if not math.isfinite(value) or value < 0.0 or value > 100.0:
        return None
    return value


def _pairs_in_group(group: str, is_tag: bool) -> list[tuple[float, float]]:
    """Complete (x, y) pairs among the attributes of one tag, in order of appearance."""
    group = _ALT_VALUE.sub(" ", group)
    if is_tag:
        # Only the tag's own attributes count, not the label text after its `>`.
        end = group.find(">")
        if end >= 0:
            group = group[: end + 1]
    # For each index ("" for plain x/y), the pairs being filled in; a repeated coordinate with the
    # same index starts a new pair (e.g. several bare `x= y=` in untagged prose).
    slots: list[dict[str, str | None]] = []
    open_by_index: dict[str, list[int]] = {}
    for m in _ATTR.finditer(group):
        coord, index = m.group(1), m.group(2)
        if m.group("bare") is not None:
            raw = m.group("bare")
        else:
            # An opening quote without its closing one means the value may be cut short.
            if m.group(3)[-1] != m.group(5)[-1]:
                continue
            raw = m.group("q")
        target = None
        for slot_id in open_by_index.get(index, []):
            if slots[slot_id][coord] is None:
                target = slot_id
                break
        if target is None:
            slots.append({"x": None, "y": None, "index": index})
            target = len(slots) - 1
            open_by_index.setdefault(index, []).append(target)
        slots[target][coord] = raw
    # Numbered attributes in numeric order (x1 before x2 whatever order they were written in);
    # the stable sort keeps repeated or unnumbered pairs in order of appearance.
    # (Compared as digit strings: int() refuses numbers longer than 4300 digits.)
    slots.sort(key=lambda slot: (len(slot["index"].lstrip("0")), slot["index"].lstrip("0")))
    out = []
    for slot in slots:
        if slot["x"] is None or slot["y"] is None:
            continue
        x, y = _to_float(slot["x"]), _to_float(slot["y"])
        if x is None or y is None:
            continue
        out.append((x, y))
    return out


def parse_points_percent(text: str) -> np.ndarray:
    """Every complete point in Molmo-style `text`, as `(N, 2)` percent `(x, y)` in 0-100.

    Never raises: garbage, `"There are none."`, `None` and truncated output give what can be
    read (possibly an empty `(0, 2)` array). Points keep their order of appearance.
    """
    try:
        if text is None:
            return np.zeros((0, 2), dtype=np.float64)
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", errors="replace")
        text = str(text)
        starts = [m.start() for m in _TAG_START.finditer(text)]
        pairs: list[tuple[float, float]] = []
        if starts:
            for a, b in zip(starts, [*starts[1:], len(text)]):
                pairs.extend(_pairs_in_group(text[a:b], is_tag=True))
        else:
            # No tag at all: read bare `x=.. y=..` pairs as Molmo's own extract_points does.
            pairs = _pairs_in_group(text, is_tag=False)
        if not pairs:
            return np.zeros((0, 2), dtype=np.float64)
        return np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    except Exception:  # noqa: BLE001 -- model output must never crash a benchmark run
        return np.zeros((0, 2), dtype=np.float64)


def parse_points(text: str, width: float, height: float) -> np.ndarray:
    """Molmo point text -> `(N, 2)` float64 pixel `(x, y)` in a `width` x `height` frame.

    Never raises on the text (see `parse_points_percent`); an invalid image size raises
    `ConfigError`, because that is a caller bug rather than model output.
    """
    w, h = _check_size(width, height)
    pct = parse_points_percent(text)
    return pct * np.array([w / 100.0, h / 100.0])[None, :]


# --------------------------------------------------------------------------- points files


class PointsFileError(VideoMolmoError):
    """A POINTS.json / JSONL file that cannot be read."""


def _point_list(value: Any, where: str) -> list[list[float]]:
    if not isinstance(value, list):
        raise PointsFileError(f"{where}: expected a list of (x, y) points, got {type(value).__name__}")
    out = []
    for p in value:
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) or c is None for c in p)
        ):
            raise PointsFileError(f"{where}: a point must be two numbers (x, y), got {p!r}")
        # JSON has no NaN literal by default; null (or a NaN that Python's json accepted) is
        # dropped later with a warning, like an out-of-frame point.
        out.append([math.nan if c is None else float(c) for c in p])
    return out


def _frame_key(key: Any, where: str) -> int:
    if isinstance(key, bool):
        raise PointsFileError(f"{where}: frame index {key!r} is not an integer")
    try:
        fi = int(key)
    except (TypeError, ValueError):
        raise PointsFileError(f"{where}: frame index {key!r} is not an integer") from None
    if isinstance(key, float) and key != fi or isinstance(key, str) and not key.strip().lstrip("+-").isdigit():
        raise PointsFileError(f"{where}: frame index {key!r} is not an integer")
    if fi < 0:
        raise PointsFileError(f"{where}: frame index {fi} is negative")
    return fi


def read_points_file(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """Read frame -> (N, 2) float64 pixel points; the one points-file reader of every command.

    Accepts a JSON object `{"<frame>": [[x, y], ...], ...}` (upstream's points format) or JSONL
    with one `{"frame": i, "points": [[x, y], ...]}` per line (lines for the same frame are
    merged). `null` coordinates become NaN and are dropped later with a warning, like
    out-of-frame points. Raises `PointsFileError` naming the file (and line) on anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise PointsFileError(f"{path}: points file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PointsFileError(f"{path}: cannot read points file ({exc})") from None
    if not text.strip():
        raise PointsFileError(f"{path}: points file is empty")
    out: dict[int, list[list[float]]] = {}
    try:
        doc = json.loads(text)
    except RecursionError:
        raise PointsFileError(f"{path}: JSON nested too deeply to be a points file") from None
    except json.JSONDecodeError as whole:
        # Not one JSON document: JSONL, unless its first line is not JSON either.
        lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        try:
            json.loads(lines[0][1])
        except json.JSONDecodeError:
            raise PointsFileError(f"{path}: not valid JSON ({whole.msg} at line {whole.lineno})") from None
        rows = []
        for n, ln in lines:
            try:
                rows.append((f"{path}:{n}", json.loads(ln)))
            except json.JSONDecodeError as exc:
                raise PointsFileError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise PointsFileError(f"{path}:{n}: JSON nested too deeply to be a points row") from None
    else:
        if isinstance(doc, dict) and "frame" in doc and "points" in doc:
            rows = [(str(path), doc)]  # a one-line JSONL file
        elif isinstance(doc, dict):
            for key, value in doc.items():
                fi = _frame_key(key, str(path))
                out.setdefault(fi, []).extend(_point_list(value, f"{path}: frame {key}"))
            return _as_arrays(out)
        else:
            raise PointsFileError(
                f"{path}: expected a JSON object mapping frame index to a list of (x, y) points, got {type(doc).__name__}"
            )
    for where, row in rows:
        if not isinstance(row, dict) or "frame" not in row or "points" not in row:
            raise PointsFileError(f'{where}: each line must be an object with "frame" and "points" keys')
        fi = _frame_key(row["frame"], where)
        out.setdefault(fi, []).extend(_point_list(row["points"], where))
    return _as_arrays(out)


def _as_arrays(points: dict[int, list[list[float]]]) -> dict[int, np.ndarray]:
    return {i: np.asarray(p, dtype=np.float64).reshape(-1, 2) for i, p in sorted(points.items())}
