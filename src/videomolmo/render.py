"""Pictures: overlays of masks and points on frames, as mp4 videos and contact sheets.

Everything here is pure drawing on RGB uint8 frames (the project's frame contract); writing an
mp4 streams frame by frame through PyAV so memory stays flat in video length.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videomolmo.errors import VideoMolmoError
from videomolmo.files import atomic_path
from videomolmo.video import write_video

# Distinct, saturated colours (RGB) for object ids 1, 2, ...: tab10 without the greys, so that
# neighbouring ids never look alike on natural images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
)
STAR_COLOR = (255, 230, 0)
GT_COLOR = (255, 255, 255)
# Candidates for a mask colour chosen against the scene: saturated hues far apart, leaving out
# the stars' yellow and the ground truth's white so the three marks never look alike.
CONTRAST_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 255),
    (0, 255, 0),
    (255, 64, 0),
    (0, 200, 255),
    (160, 0, 255),
    (0, 0, 255),
    (255, 0, 0),
)


def contrast_color(frame: np.ndarray, mask: np.ndarray | None = None,
                   avoid: Sequence[tuple[int, int, int]] = ()) -> tuple[int, int, int]:
    """The candidate colour farthest from the scene: from the colours under `mask` (the object
    the tint sits on) and from the frame's dominant colours (what surrounds it), so a blue
    sprite on a blue clip is not tinted blue. `avoid` keeps colours already used apart."""
    f = np.asarray(frame, dtype=np.float32).reshape(-1, 3)
    samples = f[:: max(1, len(f) // 4096)]
    if mask is not None and np.asarray(mask).any():
        inside = np.asarray(frame, dtype=np.float32)[np.asarray(mask, dtype=bool)]
        samples = np.concatenate([samples, inside[:: max(1, len(inside) // 4096)]])
    best, best_d = CONTRAST_COLORS[0], -1.0
    for c in CONTRAST_COLORS:
        if c in avoid:
            continue
        # The 5th-percentile distance: the colour must stand out from nearly every pixel.
        d = float(np.percentile(np.linalg.norm(samples - np.array(c, np.float32), axis=1), 5))
        if d > best_d:
            best, best_d = c, d
    return best


def watchable_fps(num_frames: int, fps: float, min_seconds: float = 3.0, min_fps: float = 2.0) -> float:
    """The overlay's frame rate: the video's own, slowed down for short clips so the overlay
    lasts at least `min_seconds` (a 12-frame clip at 30 fps would be over in 0.4 s)."""
    fps = float(fps) if fps and fps > 0 else 24.0
    if num_frames <= 0:
        return fps
    return max(min_fps, min(fps, num_frames / min_seconds))


def color_for(obj_id: int) -> tuple[int, int, int]:
    """The palette colour of object `obj_id` (ids start at 1; 0 is treated as 1)."""
    return PALETTE[(max(int(obj_id), 1) - 1) % len(PALETTE)]


@dataclass
class OverlayStyle:
    """How overlays look; the defaults read well on 480p DAVIS frames."""

    mask_alpha: float = 0.45
    star_radius: int | None = None  # None: 2.5 % of the shorter side, at least 6 px
    contour_px: int = 2
    gt_px: int = 2
    caption: bool = True
    caption_max_chars: int = 120
    #: {object id: RGB}; ids not in it use the palette. `render` fills it per video with
    #: colours chosen against the scene (`contrast_color`).
    colors: dict[int, tuple[int, int, int]] | None = None

    def color(self, obj_id: int) -> tuple[int, int, int]:
        return (self.colors or {}).get(int(obj_id)) or color_for(obj_id)


def _as_mask_dict(masks) -> dict[int, np.ndarray]:
    if masks is None:
        return {}
    if isinstance(masks, Mapping):
        return {int(k): np.asarray(v) for k, v in masks.items()}
    arr = np.asarray(masks)
    if arr.ndim == 2 and arr.dtype != bool and arr.max(initial=0) > 1:
        # An object-id map: one mask per non-zero id.
        return {int(i): arr == i for i in np.unique(arr) if i != 0}
    return {1: arr.astype(bool)}


def star_polygon(x: float, y: float, radius: float, points: int = 5) -> np.ndarray:
    """Vertices (2*points, 2) of a star centred on (x, y), tip up, inner radius 0.45 * radius."""
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, radius, 0.45 * radius)
    return np.stack([x + radii * np.cos(angles), y + radii * np.sin(angles)], axis=1)


def draw_stars(img: np.ndarray, points: np.ndarray, radius: int, color=STAR_COLOR) -> None:
    """Draw filled stars with a dark outline at pixel points (N, 2) (x, y), in place."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    shift = 4  # sub-pixel precision for cv2's fixed-point polygons
    for x, y in pts:
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        poly = np.round(star_polygon(x, y, radius) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(img, [poly], color, lineType=cv2.LINE_AA, shift=shift)
        cv2.polylines(img, [poly], True, (0, 0, 0), 1, lineType=cv2.LINE_AA, shift=shift)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    # Pillow's bundled font: scalable since Pillow 10.1, covers Latin text.
    return ImageFont.load_default(size=size)


def draw_caption(img: np.ndarray, text: str, top: bool = True) -> np.ndarray:
    """Return `img` with `text` on a translucent dark band (top or bottom); unicode-safe."""
    h, w = img.shape[:2]
    size = max(12, h // 28)
    font = _font(size)
    band_h = int(size * 1.6)
    y0 = 0 if top else h - band_h
    out = img.copy()
    region = out[y0 : y0 + band_h].astype(np.float32)
    out[y0 : y0 + band_h] = (region * 0.35).astype(np.uint8)
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    # Trim to the width so long queries end in an ellipsis instead of running off the frame.
    shown = text
    while shown and draw.textlength(shown, font=font) > w - size:
        shown = shown[: max(0, len(shown) - max(1, len(shown) // 10))]
    if shown != text:
        shown = shown[:-1] + "\u2026" if len(shown) > 1 else "\u2026"
    draw.text((size // 2, y0 + (band_h - size) // 2), shown, font=font, fill=(255, 255, 255))
    return np.asarray(pil)


def overlay_frame(
    frame: np.ndarray,
    masks=None,
    points: np.ndarray | None = None,
    gt_mask: np.ndarray | None = None,
    frame_idx: int | None = None,
    query: str | None = None,
    style: OverlayStyle | None = None,
) -> np.ndarray:
    """Draw one overlay frame.

    `masks`: a bool (H, W) mask, an object-id map, or {obj_id: bool mask}; each object is tinted
    in its palette colour with a solid contour. `points`: predicted (N, 2) pixel (x, y), drawn as
    stars. `gt_mask`: ground truth drawn as a white outline. A caption band shows the frame index
    and the query. Returns a new RGB uint8 array of the frame's size.
    """
    style = style or OverlayStyle()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise VideoMolmoError(f"overlay: frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    h, w = frame.shape[:2]
    out = frame.astype(np.float32)
    contours: list[tuple[list, tuple[int, int, int]]] = []
    for obj_id, mask in sorted(_as_mask_dict(masks).items()):
        m = np.asarray(mask, dtype=bool)
        if m.shape != (h, w):
            raise VideoMolmoError(f"overlay: mask of object {obj_id} is {m.shape}, frame is {(h, w)}")
        if not m.any():
            continue
        color = np.array(style.color(obj_id), dtype=np.float32)
        out[m] = out[m] * (1 - style.mask_alpha) + color * style.mask_alpha
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours.append((list(cs), style.color(obj_id)))
    img = np.ascontiguousarray(out.round().clip(0, 255).astype(np.uint8))
    for cs, color in contours:
        cv2.drawContours(img, cs, -1, color, style.contour_px, lineType=cv2.LINE_AA)
    if gt_mask is not None:
        g = np.asarray(gt_mask, dtype=bool)
        if g.shape != (h, w):
            raise VideoMolmoError(f"overlay: ground-truth mask is {g.shape}, frame is {(h, w)}")
        cs, _ = cv2.findContours(g.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        # Dashed look: a dark under-stroke keeps the white outline visible on bright frames.
        cv2.drawContours(img, cs, -1, (0, 0, 0), style.gt_px + 2, lineType=cv2.LINE_AA)
        cv2.drawContours(img, cs, -1, GT_COLOR, style.gt_px, lineType=cv2.LINE_AA)
    if points is not None and len(points):
        radius = style.star_radius or max(6, int(round(0.025 * min(h, w))))
        draw_stars(img, np.asarray(points, dtype=np.float64).reshape(-1, 2), radius)
    if style.caption and (frame_idx is not None or query):
        parts = []
        if frame_idx is not None:
            parts.append(f"#{frame_idx}")
        if query:
            q = " ".join(str(query).split())
            if len(q) > style.caption_max_chars:
                q = q[: style.caption_max_chars - 1] + "\u2026"
            parts.append(q)
        img = draw_caption(img, "  ".join(parts))
    return img


def write_overlay_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 24.0,
) -> int:
    """Stream RGB frames into an H.264 mp4 at `path` (appears only when complete).

    Memory is one frame, whatever the length. Returns the number of frames written."""
    # veryfast: overlays are for looking at, and encoding must not dominate a CPU run.
    return write_video(path, frames, fps=fps, crf=23, preset="veryfast")


def contact_sheet(
    frames: Sequence[np.ndarray],
    cols: int = 4,
    tile_width: int = 320,
    labels: Sequence[str] | None = None,
    pad: int = 4,
) -> np.ndarray:
    """Tile frames into one RGB image, `cols` per row, each resized to `tile_width` wide."""
    if not len(frames):
        raise VideoMolmoError("contact sheet: no frames")
    h0, w0 = frames[0].shape[:2]
    tw = int(tile_width)
    th = max(1, int(round(h0 * tw / w0)))
    cols = max(1, min(cols, len(frames)))
    rows = (len(frames) + cols - 1) // cols
    sheet = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), 24, dtype=np.uint8)
    for i, f in enumerate(frames):
        tile = cv2.resize(np.asarray(f), (tw, th), interpolation=cv2.INTER_AREA)
        if labels is not None:
            tile = draw_caption(tile, labels[i], top=False)
        r, c = divmod(i, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        sheet[y : y + th, x : x + tw] = tile
    return sheet


def legend_entries(style: OverlayStyle | None = None, gt: bool = True) -> list[tuple[str, str, tuple[int, int, int]]]:
    """(kind, label, colour) of what an overlay draws, for `draw_legend`."""
    style = style or OverlayStyle()
    entries = [("mask", "predicted mask", style.color(1)), ("star", "predicted point", STAR_COLOR)]
    if gt:
        entries.append(("outline", "ground truth", GT_COLOR))
    return entries


def draw_legend(sheet: np.ndarray, entries: Sequence[tuple[str, str, tuple[int, int, int]]]) -> np.ndarray:
    """`sheet` with a band below it explaining each mark: a swatch, star or outline plus its label."""
    h, w = sheet.shape[:2]
    size = 16
    font = _font(size)
    band = np.full((int(size * 2.2), w, 3), 24, np.uint8)
    x, y = size // 2, band.shape[0] // 2
    for kind, label, color in entries:
        if kind == "mask":
            cv2.rectangle(band, (x, y - size // 2), (x + size, y + size // 2), color, -1)
        elif kind == "star":
            draw_stars(band, np.array([[x + size / 2, y]]), size // 2 + 1, color)
        else:
            cv2.rectangle(band, (x, y - size // 2), (x + size, y + size // 2), color, 2)
        pil = Image.fromarray(band)
        draw = ImageDraw.Draw(pil)
        draw.text((x + size + 6, y - size // 2 - 1), label, font=font, fill=(235, 235, 235))
        band = np.asarray(pil).copy()
        x += size + 6 + int(draw.textlength(label, font=font)) + size * 2
    return np.concatenate([sheet, band], axis=0)


def sample_indices(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly over `num_frames`, always including first and last."""
    if num_frames <= 0:
        return []
    count = max(1, min(count, num_frames))
    if count == 1:
        return [0]
    return sorted({int(round(i * (num_frames - 1) / (count - 1))) for i in range(count)})


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an RGB image as PNG atomically (temp file + rename)."""
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.asarray(img)).save(tmp, format="PNG")


@dataclass
class OverlayFrame:
    """Everything drawn on one frame: the inputs of `overlay_frame` bundled for streaming."""

    frame: np.ndarray
    index: int
    masks: object = None
    points: np.ndarray | None = None
    gt_mask: np.ndarray | None = None


def _enlarge(it: OverlayFrame, min_short_side: int) -> OverlayFrame:
    h, w = it.frame.shape[:2]
    f = -(-min_short_side // max(1, min(h, w)))  # ceil
    if f <= 1:
        return it

    def up(m):
        return None if m is None else np.repeat(np.repeat(np.asarray(m), f, axis=0), f, axis=1)

    masks = it.masks
    if isinstance(masks, Mapping):
        masks = {k: up(v) for k, v in masks.items()}
    elif masks is not None:
        masks = up(masks)
    pts = None if it.points is None else np.asarray(it.points, dtype=np.float64).reshape(-1, 2) * f
    return OverlayFrame(up(it.frame), it.index, masks, pts, up(it.gt_mask))


def _pick_colors(style: OverlayStyle, it: OverlayFrame) -> None:
    """Choose each object's colour once per video, on the first frame that shows it, so the
    tint contrasts with the scene and stays the same from frame to frame."""
    if style.colors is None:
        style.colors = {}
    for obj_id, m in _as_mask_dict(it.masks).items():
        if obj_id not in style.colors and np.asarray(m).any():
            style.colors[obj_id] = contrast_color(it.frame, m, avoid=list(style.colors.values()))


def render(
    items: Iterable[OverlayFrame],
    video_path: str | os.PathLike | None = None,
    sheet_path: str | os.PathLike | None = None,
    query: str | None = None,
    fps: float = 24.0,
    num_frames: int | None = None,
    sheet_count: int = 8,
    sheet_cols: int = 4,
    style: OverlayStyle | None = None,
    min_short_side: int = 360,
) -> dict[str, object]:
    """Render a stream of `OverlayFrame`s to an mp4 and/or a contact sheet in one pass.

    The contact sheet samples `sheet_count` frames evenly; that needs `num_frames` up front
    (otherwise every frame is kept as a small thumbnail and the sheet is sampled at the end).
    Frames whose short side is below `min_short_side` are enlarged by an integer factor (nearest
    neighbour, so pixels stay sharp) before drawing, so captions and stars stay legible on small
    clips such as the 112 px synthetic benchmark. Short clips play slower than `fps`
    (`watchable_fps`), and each object's colour is chosen against the scene (`contrast_color`).
    Returns {"frames": n, "video": path or None, "sheet": path or None}.
    """
    from dataclasses import replace

    style = replace(style or OverlayStyle())
    wanted = set(sample_indices(num_frames, sheet_count)) if num_frames else None
    thumbs: list[tuple[int, np.ndarray]] = []
    seen_gt = False

    def drawn() -> Iterator[np.ndarray]:
        nonlocal seen_gt
        for it in items:
            it = _enlarge(it, min_short_side)
            seen_gt = seen_gt or it.gt_mask is not None
            _pick_colors(style, it)
            img = overlay_frame(it.frame, it.masks, it.points, it.gt_mask, it.index, query, style)
            if sheet_path is not None and (wanted is None or it.index in wanted):
                # Thumbnails only: a long video must not keep full frames around.
                h, w = img.shape[:2]
                tw = min(w, 480)
                thumbs.append((it.index, cv2.resize(img, (tw, max(1, h * tw // w)), interpolation=cv2.INTER_AREA)))
                if wanted is None and len(thumbs) > 4 * sheet_count:
                    # Keep memory bounded when the length is unknown: thin out evenly.
                    del thumbs[1::2]
            yield img

    n = 0
    if video_path is not None:
        n = write_overlay_video(video_path, drawn(), fps=watchable_fps(num_frames, fps) if num_frames else fps)
    else:
        for _ in drawn():
            n += 1
    if sheet_path is not None:
        if not thumbs:
            raise VideoMolmoError(f"{sheet_path}: no frames to put on the contact sheet")
        keep = [thumbs[i] for i in sample_indices(len(thumbs), sheet_count)]
        sheet = contact_sheet([t for _, t in keep], cols=sheet_cols, tile_width=min(320, keep[0][1].shape[1]))
        write_png(sheet_path, draw_legend(sheet, legend_entries(style, gt=seen_gt)))
    return {"frames": n, "video": str(video_path) if video_path else None, "sheet": str(sheet_path) if sheet_path else None}
