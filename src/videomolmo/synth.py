"""Deterministic synthetic spatio-temporal pointing data, in memory or in the MeViS layout.

Each clip shows 2-8 sprites (shape x colour x size) over a textured, noisy background. Sprites move
left / right / up / down or stand still at a few speeds chosen so that, at the default 112 px, an
object crosses about one 2x2 window of 14 px patches over the l=4 context frames. Later sprites
occlude earlier ones; moving sprites may enter or leave the frame. Expressions come in six kinds:

- ``appearance``: "the red triangle" (a sprite unique by colour and shape),
- ``motion``: "the red square moving left" (two or more identical sprites that differ only in
  motion -- unanswerable from one frame); the referred sprite and at least one look-alike are
  visible at the target frame (the clip's last: the one pointed at with its full context),
- ``still``: "the red square that is not moving" (the same, for the look-alike standing still),
- ``multi``: "all blue shapes",
- ``count``: "how many circles are there?",
- ``absent``: "the green star" when there is none (answer "There are none.").

`generate_clip(rng, config)` builds one clip in memory (what training uses); `write_dataset`
writes N clips in the MeViS layout so every reader, metric and command works on them unchanged:

    <out>/JPEGImages/<vid>/<frame>.jpg
    <out>/meta_expressions.json   videos -> {frames, expressions{exp, obj_id, anno_id, kind}}
    <out>/mask_dict.json          anno_id -> [COCO RLE or null per frame]
    <out>/points.json             vid -> obj_id -> [[x, y] or null per frame]

Splits draw from disjoint seed streams (`split_seed`), so train / val / test never share a clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from videomolmo.files import atomic_write_json
from videomolmo.errors import ConfigError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
                 "star": "stars", "diamond": "diamonds"}
# Saturated, well separated hues so a colour name is unambiguous after JPEG compression.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
}
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
MOTION_VECTORS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
                  "down": (0.0, 1.0), "still": (0.0, 0.0)}
MOTION_PHRASES = {"left": "moving left", "right": "moving right", "up": "moving up",
                  "down": "moving down", "still": "that is not moving"}
KINDS: tuple[str, ...] = ("appearance", "motion", "multi", "count", "absent", "still")
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
ABSENT_ANSWER = "There are none."


@dataclass(frozen=True)
class SynthConfig:
    """How clips are drawn. Sizes and speeds are given at 112 px and scale with `size`."""

    size: int = 112
    frames: int = 8
    min_sprites: int = 2
    max_sprites: int = 8
    radius_range: tuple[float, float] = (7.0, 12.0)
    speeds: tuple[float, ...] = (3.5, 5.0, 7.0)  # px/frame at 112 px: 14-28 px over 4 frames
    enter_leave_prob: float = 0.25
    motion_group_prob: float = 0.6  # chance a clip contains a group of identical sprites
    noise_std: float = 6.0
    # Order of KINDS; a 5-tuple (before `still` was its own kind) gets a still weight of 0.
    kind_weights: tuple[float, ...] = (0.35, 0.25, 0.15, 0.15, 0.10, 0.10)
    # Chance that an absent query names a colour that is in the clip (in a shape that is not):
    # only the shape says "none". Uniform absent looks mostly miss on colour alone, so a model
    # blind to shape still answers them; 0 keeps the draw (and every existing stream) unchanged.
    hard_absent: float = 0.0

    def __post_init__(self) -> None:
        if len(self.kind_weights) == len(KINDS) - 1:
            object.__setattr__(self, "kind_weights", tuple(self.kind_weights) + (0.0,))
        if self.size < 32:
            raise ConfigError(f"synth: --size must be >= 32, got {self.size}")
        if self.frames < 1:
            raise ConfigError(f"synth: --frames must be >= 1, got {self.frames}")
        if not 1 <= self.min_sprites <= self.max_sprites <= 8:
            raise ConfigError(
                f"synth: need 1 <= min_sprites <= max_sprites <= 8, got "
                f"{self.min_sprites}..{self.max_sprites}")
        if len(self.kind_weights) != len(KINDS) or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ConfigError(f"synth: kind_weights must be {len(KINDS)} non-negative numbers")
        if not 0.0 <= self.hard_absent <= 1.0:
            raise ConfigError(f"synth: hard_absent must be in [0, 1], got {self.hard_absent}")

    @property
    def scale(self) -> float:
        return self.size / 112.0

    @classmethod
    def from_name(cls, name: str, **overrides) -> "SynthConfig":
        """Named presets: `default`, `single` (one sprite, appearance only: curriculum stage 1),
        `few` (2-4 sprites), `motion` (mostly motion-only queries), `eval` (the benchmark mix),
        `shape-text` (counting and absent queries that only the shape answers: training only),
        `count` (4-8 sprites, mostly counting queries: training only)."""
        presets = {
            "default": cls(),
            "eval": cls(),
            "single": cls(min_sprites=1, max_sprites=1, motion_group_prob=0.0,
                          kind_weights=(1.0, 0.0, 0.0, 0.0, 0.0)),
            "few": cls(min_sprites=2, max_sprites=4),
            "motion": cls(min_sprites=2, max_sprites=5, motion_group_prob=1.0,
                          kind_weights=(0.2, 0.8, 0.0, 0.0, 0.0, 0.2)),
            "shape-text": cls(min_sprites=3, max_sprites=6,
                              kind_weights=(0.3, 0.0, 0.15, 0.3, 0.3, 0.0), hard_absent=0.8),
            # Larger groups to count (the bundled model under-counts 3 and more).
            "count": cls(min_sprites=4, max_sprites=8, motion_group_prob=1.0,
                         kind_weights=(0.15, 0.15, 0.1, 0.6, 0.0, 0.0)),
        }
        if name not in presets:
            raise ConfigError(f"synth: unknown preset {name!r}; choose from {sorted(presets)}")
        return replace(presets[name], **overrides) if overrides else presets[name]


@dataclass
class Sprite:
    obj_id: int
    shape: str
    colour: str
    radius: float
    motion: str
    speed: float
    start: tuple[float, float]  # centre (x, y) at frame 0

    def centre(self, t: int) -> tuple[float, float]:
        vx, vy = MOTION_VECTORS[self.motion]
        return self.start[0] + vx * self.speed * t, self.start[1] + vy * self.speed * t

    def describe(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Expression:
    text: str
    kind: str
    obj_ids: list[int]


@dataclass
class Clip:
    """One synthetic clip: frames, per-object visible masks and points, and its expressions."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    masks: np.ndarray  # (K, T, H, W) bool, visible pixels of each sprite
    points: list[list[tuple[float, float] | None]]  # [obj][t] -> (x, y) or None
    sprites: list[Sprite]
    expressions: list[Expression] = field(default_factory=list)

    def target_points(self, obj_ids: list[int], t: int) -> np.ndarray:
        """GT pixel points (N, 2) of the given objects visible in frame t."""
        pts = [self.points[k][t] for k in obj_ids if self.points[k][t] is not None]
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    def union_mask(self, obj_ids: list[int], t: int) -> np.ndarray:
        h, w = self.frames.shape[1:3]
        out = np.zeros((h, w), dtype=bool)
        for k in obj_ids:
            out |= self.masks[k, t]
        return out


def _shape_mask(shape: str, cx: float, cy: float, r: float, h: int, w: int) -> np.ndarray:
    """Filled sprite mask at sub-pixel centre (cv2 fixed-point with 4 fractional bits)."""
    canvas = np.zeros((h, w), dtype=np.uint8)
    sh = 4
    f = float(1 << sh)
    if shape == "circle":
        cv2.circle(canvas, (int(round(cx * f)), int(round(cy * f))), int(round(r * f)), 1, -1,
                   lineType=cv2.LINE_8, shift=sh)
        return canvas.astype(bool)
    if shape == "square":
        a = r * 0.85
        poly = [(cx - a, cy - a), (cx + a, cy - a), (cx + a, cy + a), (cx - a, cy + a)]
    elif shape == "diamond":
        a = r * 1.1
        poly = [(cx, cy - a), (cx + a, cy), (cx, cy + a), (cx - a, cy)]
    elif shape == "triangle":
        # Equilateral, centroid at the centre, so the GT point lies inside.
        poly = [(cx + r * 1.15 * np.cos(a), cy + r * 1.15 * np.sin(a))
                for a in (-np.pi / 2, np.pi / 6, 5 * np.pi / 6)]
    elif shape == "star":
        poly = []
        for i in range(10):
            a = -np.pi / 2 + i * np.pi / 5
            rr = r * 1.2 if i % 2 == 0 else r * 0.55
            poly.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    pts = np.round(np.asarray(poly) * f).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=sh)
    return canvas.astype(bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency two-colour texture plus optional stripes: not a flat colour."""
    c1 = rng.uniform(40, 200, size=3)
    c2 = np.clip(c1 + rng.normal(0, 35, size=3), 0, 255)
    g = int(rng.integers(3, 8))
    coarse = rng.uniform(0, 1, size=(g, g)).astype(np.float32)
    blend = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    bg = c1 * (1 - blend) + c2 * blend
    if rng.random() < 0.4:
        period = rng.uniform(6, 20)
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w]
        stripes = np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
        bg = bg + 12.0 * stripes[..., None]
    # Muted background so that saturated sprites stay nameable.
    grey = bg.mean(axis=-1, keepdims=True)
    bg = 0.5 * bg + 0.5 * grey
    return bg.astype(np.float32)


def _visible_point(mask: np.ndarray) -> tuple[float, float] | None:
    """Centroid of the visible pixels, or the visible pixel nearest to it when the centroid
    falls outside (a partly occluded or cut sprite)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
    if mask[int(cy), int(cx)]:
        return float(cx), float(cy)
    i = int(np.argmin((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2))
    return float(xs[i] + 0.5), float(ys[i] + 0.5)


def _start_position(rng: np.random.Generator, cfg: SynthConfig, motion: str, speed: float,
                    r: float, enter_leave: bool) -> tuple[float, float]:
    s, T = cfg.size, cfg.frames
    vx, vy = MOTION_VECTORS[motion]
    travel = speed * max(T - 1, 0)
    if enter_leave and motion != "still":
        # Start outside (entering) or end outside (leaving) along the motion axis.
        along = rng.uniform(r, s - r)
        if rng.random() < 0.5:  # enters
            p = -r * 1.2 if (vx > 0 or vy > 0) else s + r * 1.2
        else:  # leaves: ends just past the border
            end = s + r * 1.2 if (vx > 0 or vy > 0) else -r * 1.2
            p = end - (vx + vy) * travel
        return (p, along) if vx != 0 else (along, p)
    # Stay fully inside for the whole clip.
    lo_x = r + max(0.0, -vx * travel)
    hi_x = s - r - max(0.0, vx * travel)
    lo_y = r + max(0.0, -vy * travel)
    hi_y = s - r - max(0.0, vy * travel)
    if lo_x > hi_x:
        lo_x = hi_x = s / 2
    if lo_y > hi_y:
        lo_y = hi_y = s / 2
    return float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))


def _make_sprites(rng: np.random.Generator, cfg: SynthConfig) -> list[Sprite]:
    n = int(rng.integers(cfg.min_sprites, cfg.max_sprites + 1))
    sprites: list[Sprite] = []
    specs: list[tuple[str, str, float, str]] = []  # shape, colour, radius, motion
    if n >= 2 and rng.random() < cfg.motion_group_prob:
        # A group of identical sprites (same shape, colour, size) with distinct motions.
        g = int(rng.integers(2, min(3, n) + 1))
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        radius = float(rng.uniform(*cfg.radius_range)) * cfg.scale
        motions = rng.choice(MOTIONS, size=g, replace=False)
        specs += [(str(shape), str(colour), radius, str(m)) for m in motions]
    while len(specs) < n:
        shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        radius = float(rng.uniform(*cfg.radius_range)) * cfg.scale
        # Same colour and shape means the same size too, so a look-alike differs only in motion.
        radius = next((r for sh, c, r, _ in specs if (sh, c) == (shape, colour)), radius)
        specs.append((shape, colour, radius, str(rng.choice(MOTIONS))))
    order = rng.permutation(len(specs))  # z-order: later ones occlude earlier ones
    for k, i in enumerate(order):
        shape, colour, radius, motion = specs[i]
        speed = 0.0 if motion == "still" else float(rng.choice(cfg.speeds)) * cfg.scale
        enter_leave = bool(rng.random() < cfg.enter_leave_prob)
        start = _start_position(rng, cfg, motion, speed, radius, enter_leave)
        sprites.append(Sprite(k, shape, colour, radius, motion, speed, start))
    return sprites


def _render(rng: np.random.Generator, cfg: SynthConfig, sprites: list[Sprite]
            ) -> tuple[np.ndarray, np.ndarray]:
    s, T = cfg.size, cfg.frames
    bg = _background(rng, s, s)
    frames = np.empty((T, s, s, 3), dtype=np.uint8)
    masks = np.zeros((len(sprites), T, s, s), dtype=bool)
    jitter = {sp.obj_id: rng.normal(0, 8, size=3) for sp in sprites}
    for t in range(T):
        img = bg.copy()
        for sp in sprites:  # painter's order == z-order
            cx, cy = sp.centre(t)
            m = _shape_mask(sp.shape, cx, cy, sp.radius, s, s)
            img[m] = np.clip(np.asarray(COLOURS[sp.colour], np.float32) + jitter[sp.obj_id], 0, 255)
            masks[:sp.obj_id, t] &= ~m  # occludes everything painted before it
            masks[sp.obj_id, t] = m
        img += rng.normal(0, cfg.noise_std, size=img.shape).astype(np.float32)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames, masks


def _expressions(rng: np.random.Generator, cfg: SynthConfig, sprites: list[Sprite],
                 visible: set[int] | None = None) -> list[Expression]:
    """One expression per available kind, drawn in proportion to `kind_weights`; every clip
    gets at least one expression. `visible`: ids of the sprites visible at the target frame
    (None: all) -- a motion / still query needs its sprite and a look-alike there, else it
    would ask for a sprite that has left (answer "none") or be answerable from one frame."""
    visible = {sp.obj_id for sp in sprites} if visible is None else visible
    by_look: dict[tuple[str, str], list[Sprite]] = {}
    for sp in sprites:
        by_look.setdefault((sp.colour, sp.shape), []).append(sp)
    candidates: dict[str, list[Expression]] = {k: [] for k in KINDS}
    for (colour, shape), group in by_look.items():
        if len(group) == 1:
            candidates["appearance"].append(Expression(f"the {colour} {shape}", "appearance",
                                                       [group[0].obj_id]))
        else:
            motions = [sp.motion for sp in group]
            seen = [sp for sp in group if sp.obj_id in visible]
            for sp in seen:
                if motions.count(sp.motion) == 1 and len(seen) >= 2:
                    kind = "still" if sp.motion == "still" else "motion"
                    candidates[kind].append(Expression(
                        f"the {colour} {shape} {MOTION_PHRASES[sp.motion]}", kind, [sp.obj_id]))
    for colour in COLOURS:
        ids = [sp.obj_id for sp in sprites if sp.colour == colour]
        if len(ids) >= 2:
            candidates["multi"].append(Expression(f"all {colour} shapes", "multi", ids))
    for shape in SHAPES:
        ids = [sp.obj_id for sp in sprites if sp.shape == shape]
        if ids:
            candidates["count"].append(Expression(
                f"how many {SHAPE_PLURALS[shape]} are there?", "count", ids))
    looks = set(by_look)
    absent = [(c, sh) for c in COLOURS for sh in SHAPES if (c, sh) not in looks]
    if cfg.hard_absent > 0 and rng.random() < cfg.hard_absent:
        present = {c for c, _ in looks}
        absent = [(c, sh) for c, sh in absent if c in present] or absent
    if absent:
        c, sh = absent[int(rng.integers(len(absent)))]
        candidates["absent"].append(Expression(f"the {c} {sh}", "absent", []))

    out: list[Expression] = []
    for kind, weight in zip(KINDS, cfg.kind_weights):
        cands = candidates[kind]
        if cands and weight > 0 and rng.random() < min(1.0, weight * 2.5):
            out.append(cands[int(rng.integers(len(cands)))])
    if not out:
        w = np.asarray([cfg.kind_weights[i] if candidates[k] else 0.0 for i, k in enumerate(KINDS)])
        if w.sum() == 0:  # only absent/other kinds exist: fall back to any available
            w = np.asarray([1.0 if candidates[k] else 0.0 for k in KINDS])
        kind = KINDS[int(rng.choice(len(KINDS), p=w / w.sum()))]
        cands = candidates[kind]
        out.append(cands[int(rng.integers(len(cands)))])
    return out


def generate_clip(rng: np.random.Generator, config: SynthConfig | None = None) -> Clip:
    """Draw one clip (frames, masks, points, expressions) from `rng`; no disk access."""
    cfg = config or SynthConfig()
    sprites = _make_sprites(rng, cfg)
    frames, masks = _render(rng, cfg, sprites)
    points = [[_visible_point(masks[k, t]) for t in range(cfg.frames)] for k in range(len(sprites))]
    clip = Clip(frames=frames, masks=masks, points=points, sprites=sprites)
    visible = {k for k in range(len(sprites)) if points[k][-1] is not None}
    clip.expressions = _expressions(rng, cfg, sprites, visible)
    return clip


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """The seed stream of a split: train / val / test never share a clip for the same seed."""
    if split not in SPLIT_OFFSETS:
        raise ConfigError(f"synth: unknown split {split!r}; choose from {sorted(SPLIT_OFFSETS)}")
    return np.random.SeedSequence([int(seed), 0x5EED, SPLIT_OFFSETS[split]])


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of clip `index` of a split; independent of how many clips are drawn."""
    return np.random.default_rng(split_seed(seed, split).spawn(index + 1)[index])


def write_dataset(out: str | Path, videos: int, seed: int = 0, split: str = "train",
                  config: SynthConfig | None = None, progress=None) -> Path:
    """Write `videos` clips of a split in the MeViS layout under `out`; returns the folder.

    Resumable: clips whose JPEGs are all present are re-derived (cheaply, for the metadata)
    but not re-encoded; the JSON files are written atomically at the end.
    """
    from pycocotools import mask as mask_utils

    cfg = config or SynthConfig()
    if videos < 1:
        raise ConfigError(f"synth: --videos must be >= 1, got {videos}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    meta: dict = {"videos": {}}
    mask_dict: dict[str, list] = {}
    points_json: dict[str, dict[str, list]] = {}
    anno = 0
    for i in range(videos):
        clip = generate_clip(clip_rng(seed, split, i), cfg)
        vid = f"{split}_{seed}_{i:05d}"
        vdir = root / "JPEGImages" / vid
        vdir.mkdir(parents=True, exist_ok=True)
        names = [f"{t:05d}" for t in range(cfg.frames)]
        for t, name in enumerate(names):
            p = vdir / f"{name}.jpg"
            if not p.exists():
                tmp = vdir / f".{name}.tmp.jpg"
                cv2.imwrite(str(tmp), cv2.cvtColor(clip.frames[t], cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                os.replace(tmp, p)
        anno_ids = []
        for k in range(len(clip.sprites)):
            rles = []
            for t in range(cfg.frames):
                m = clip.masks[k, t]
                if not m.any():
                    rles.append(None)
                    continue
                r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                rles.append({"size": [int(x) for x in r["size"]], "counts": r["counts"].decode("ascii")})
            mask_dict[str(anno)] = rles
            anno_ids.append(anno)
            anno += 1
        exps = {}
        for j, e in enumerate(clip.expressions):
            exps[str(j)] = {"exp": e.text, "obj_id": list(e.obj_ids),
                            "anno_id": [anno_ids[k] for k in e.obj_ids], "kind": e.kind}
        meta["videos"][vid] = {
            "frames": names,
            "expressions": exps,
            "objects": {str(sp.obj_id): {"shape": sp.shape, "colour": sp.colour,
                                         "motion": sp.motion, "speed": sp.speed,
                                         "radius": sp.radius, "anno_id": anno_ids[sp.obj_id]}
                        for sp in clip.sprites},
        }
        points_json[vid] = {str(k): [None if p is None else [round(p[0], 2), round(p[1], 2)]
                                     for p in clip.points[k]] for k in range(len(clip.sprites))}
        if progress is not None:
            progress(i + 1, videos)
    atomic_write_json(root / "mask_dict.json", mask_dict)
    atomic_write_json(root / "points.json", points_json)
    atomic_write_json(root / "meta_expressions.json", meta)
    return root
