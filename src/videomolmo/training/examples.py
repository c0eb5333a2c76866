"""Training examples: (frame, its l previous frames, query, target Molmo point text).

The same builder serves every source:

- any dataset `videomolmo.data.load_dataset` reads (Ref-YouTube-VOS, MeViS, Ref-DAVIS17,
  ReVOS, the synthetic folders, ...): target points come from the sample's `gt_points` when the
  dataset ships them (synthetic data does), else from the ground-truth masks (`mask_points`:
  the most interior pixel of each object). The paper's 72k pointing pairs use the annotation
  pipeline's best-of-k clicks instead (`videomolmo annotate`, which needs a mask backend run);
  until its output is read here, mask datasets train on interior points;
- the in-memory synthetic generator (`SynthStream`), so training needs no disk at all, with a
  curriculum over synthetic presets.

A frame whose referred objects are all invisible (or an expression with no object) gets the
answer "There are none.", as Molmo answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from videomolmo.errors import ConfigError, DatasetError
from videomolmo.points import format_points
from videomolmo.synth import Clip, SynthConfig, generate_clip


@dataclass
class Example:
    """One training pair. `frames[-1]` is the frame being pointed at, `frames[:-1]` its context
    (fewer than l at the start of a video: the processor pads with black frames)."""

    frames: list[np.ndarray]
    query: str
    answer: str
    points: np.ndarray  # (N, 2) pixel (x, y) in frames[-1]
    kind: str = ""
    source: str = ""
    target_mask: np.ndarray | None = None  # (H, W) bool: the referred objects in frames[-1]
    # (len(MOTIONS), H, W) bool: every visible sprite in frames[-1] by its motion (synthetic
    # only; the motion loss's targets)
    motion_masks: np.ndarray | None = None
    # (len(SHAPES), H, W) bool: the same by shape (the attribute loss's targets)
    shape_masks: np.ndarray | None = None

    @property
    def frame(self) -> np.ndarray:
        return self.frames[-1]

    @property
    def context(self) -> list[np.ndarray]:
        return self.frames[:-1]


def answer_text(points: np.ndarray, width: int, height: int, decimals: int = 1,
                label: str = "object") -> str:
    """Molmo point text for pixel points; no points -> "There are none."."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    # Points on the far border would print as 100.x; keep them inside the image.
    pts = np.clip(pts, 0.0, [width - 1e-6, height - 1e-6]) if len(pts) else pts
    return format_points(pts, width, height, label=label, decimals=decimals)


def example_from_clip(clip: Clip, expression_index: int, t: int, context: int = 4,
                      decimals: int = 0, label: str = "object") -> Example:
    """Example for expression `expression_index` of a synthetic clip at frame `t`."""
    e = clip.expressions[expression_index]
    h, w = clip.frames.shape[1:3]
    pts = clip.target_points(e.obj_ids, t)
    frames = [clip.frames[i] for i in range(max(0, t - context), t + 1)]
    from videomolmo.training.attributes import shape_masks
    from videomolmo.training.motion import motion_masks

    return Example(frames=frames, query=e.text, answer=answer_text(pts, w, h, decimals, label),
                   points=pts, kind=e.kind, source="synth", target_mask=clip.union_mask(e.obj_ids, t),
                   motion_masks=motion_masks(clip, t), shape_masks=shape_masks(clip, t))


_MIX = {"few": 0.45, "default": 0.2, "motion": 0.35}
# Named curricula, `(until_fraction, {synth preset: weight})` stages; the CLI's help reads the names.
CURRICULA: dict[str, list[tuple[float, dict[str, float]]]] = {
    "probe2": [(0.3, {"single": 1.0}), (1.0, _MIX)],
    "short": [(0.1, {"single": 1.0}), (1.0, _MIX)],
    "mix": [(1.0, _MIX)],
    "motion": [(1.0, {"motion": 0.7, "few": 0.3})],
    "motion-stage": [(1.0, {"motion": 0.5, "few": 0.3, "default": 0.2})],
    "single": [(1.0, {"single": 1.0})],
    "shape-text": [(1.0, {"shape-text": 0.35, "few": 0.25, "default": 0.15, "motion": 0.25})],
    # shape-text with its `default` share (and some of `few`) moved to large counting groups.
    "count-text": [(1.0, {"shape-text": 0.35, "count": 0.25, "few": 0.15, "motion": 0.25})],
}


@dataclass
class Curriculum:
    """Stages of synthetic presets: `stages[i] = (until_fraction, {preset: weight})`."""

    stages: list[tuple[float, dict[str, float]]] = field(
        default_factory=lambda: [(until, dict(w)) for until, w in CURRICULA["probe2"]])

    @classmethod
    def from_name(cls, name: str) -> "Curriculum":
        """`probe2` (one sprite for 30% of steps, then the mix), `short` (one sprite for 10%),
        `mix` (the mix from step 0),
        `motion` (motion-heavy, for the temporal ablation), `motion-stage` (half motion-heavy,
        the rest the usual mix: the motion stage, without forgetting the other kinds), `single`,
        `shape-text` (a third counting / absent queries that only the shape answers, the rest the
        mix: for a model whose features hold shape but whose text answers do not use it)."""
        if name not in CURRICULA:
            raise ConfigError(f"unknown curriculum {name!r}; choose from {sorted(CURRICULA)}")
        return cls([(until, dict(w)) for until, w in CURRICULA[name]])

    def weights_at(self, fraction: float) -> dict[str, float]:
        for until, w in self.stages:
            if fraction < until:
                return w
        return self.stages[-1][1]


class SynthStream:
    """Endless synthetic examples drawn in memory, deterministic under `seed` and resumable
    through `state()` / `set_state()` (the numpy generator's state)."""

    def __init__(self, seed: int, total_steps: int, curriculum: Curriculum | None = None,
                 context: int = 4, size: int = 112, decimals: int = 0, label: str = "object",
                 rank: int = 0):
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A, rank]))
        self.total = max(1, total_steps)
        self.curriculum = curriculum or Curriculum()
        self.context, self.size, self.decimals, self.label = context, size, decimals, label
        self._configs: dict[str, SynthConfig] = {}

    def _config(self, name: str) -> SynthConfig:
        if name not in self._configs:
            self._configs[name] = SynthConfig.from_name(name, size=self.size, frames=self.context + 1)
        return self._configs[name]

    def batch(self, n: int, step: int) -> list[Example]:
        weights = self.curriculum.weights_at(step / self.total)
        names = sorted(weights)
        p = np.asarray([weights[k] for k in names], dtype=np.float64)
        out = []
        for _ in range(n):
            name = names[int(self.rng.choice(len(names), p=p / p.sum()))]
            clip = generate_clip(self.rng, self._config(name))
            j = int(self.rng.integers(len(clip.expressions)))
            out.append(example_from_clip(clip, j, self.context, self.context, self.decimals,
                                         self.label))
        return out

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def mask_points(mask: np.ndarray) -> np.ndarray:
    """Per connected component of at least 4 pixels, its most interior pixel: the target points a
    ground-truth mask gives. (The annotation pipeline's best-of-k clicks need a mask backend run
    per frame; `videomolmo annotate` writes them as a dataset of points instead.)"""
    import cv2

    n, labels = cv2.connectedComponents(mask.astype(np.uint8))
    pts = []
    for c in range(1, n):
        comp = (labels == c).astype(np.uint8)
        if comp.sum() < 4:
            continue
        dist = cv2.distanceTransform(comp, cv2.DIST_L2, 3)
        y, x = np.unravel_index(int(dist.argmax()), dist.shape)
        pts.append([x + 0.5, y + 0.5])
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def example_from_sample(sample, frames: list[np.ndarray], t: int, points_fn: Callable[[], Callable],
                        decimals: int = 1, label: str = "object", target_mask: bool = False) -> Example:
    """Example for frame `t` of a `videomolmo.data` sample; `frames` ends with frame t.

    Target points: the sample's `gt_points` when present, else `points_fn()(gt_mask)` (a getter,
    so a costly points function is only built once a mask needs it).
    `target_mask` also attaches the GT mask (for the grounding loss); it is decoded once."""
    mask = None
    if sample.gt_points is not None and sample.gt_points[t] is not None:
        pts = sample.gt_points[t]
    else:
        mask = sample.gt_mask(t)
        pts = points_fn()(mask)
    if target_mask and mask is None and sample.has_masks:
        mask = sample.gt_mask(t)
    h, w = frames[-1].shape[:2]
    return Example(frames=list(frames), query=sample.expression, answer=answer_text(pts, w, h, decimals, label),
                   points=np.asarray(pts), kind=str(sample.meta.get("kind", "")),
                   source=f"{sample.video_id}/{sample.exp_id}/{t}", target_mask=mask if target_mask else None)


class LazyPointsFn:
    """The masks -> points function, resolved on first use."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.fn = fn

    def __call__(self) -> Callable[[np.ndarray], np.ndarray]:
        if self.fn is None:
            self.fn = mask_points
        return self.fn


def examples_from_dataset(dataset: Sequence, context: int = 4, frame_stride: int = 1,
                          decimals: int = 1, label: str = "object",
                          points_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                          max_examples: int | None = None, target_masks: bool = False) -> Iterator[Example]:
    """Yield examples from every (sample, frame) of a `videomolmo.data` dataset.

    Uses the sample's `gt_points` when present, else `points_fn(gt_mask)` (default:
    `mask_points`). Frames are decoded lazily, one video at a time. `target_masks`
    attaches each frame's GT mask (the grounding loss needs it).
    """
    pf = LazyPointsFn(points_fn)
    n = 0
    for sample in dataset:
        if sample.gt_points is None and not sample.has_masks:
            raise DatasetError(f"{sample.video_id}/{sample.exp_id}: no masks and no points to "
                               "build training targets from")
        video = sample.video()
        try:
            frames = [np.asarray(f) for f in video]
        finally:
            close = getattr(video, "close", None)
            if close:
                close()
        for t in range(0, len(frames), frame_stride):
            yield example_from_sample(sample, frames[max(0, t - context): t + 1], t, pf, decimals, label,
                                      target_masks)
            n += 1
            if max_examples is not None and n >= max_examples:
                return
