"""Bidirectional temporal mask fusion (VideoMolmo Sec. 4.2, Eq. 4-6) and the ablation strategies.

Between two anchor frames i and i+k every frame gets two candidate masks: the anchor-i mask
propagated forward and the anchor-(i+k) mask propagated backward. A *strategy* turns the pair
into one mask. `fuse` is the paper's rule; the others are the alternatives of its Table 5.

All functions are pure: they never modify their inputs and return a fresh array (or None).

Conventions shared by every strategy:

- A side is `None` when it does not exist (no anchor on that side, e.g. the tail after the last
  anchor) and an all-False mask when the anchor had no points or the object was lost.
- When both sides are `None` the result is `None` (the caller knows no shape to build); in every
  other case the result is a bool (H, W) mask.
- Two non-None sides must have the same shape, else `MaskError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from videomolmo.errors import ConfigError, MaskError

__all__ = [
    "FusionContext",
    "Strategy",
    "STRATEGIES",
    "fuse",
    "get_strategy",
    "mask_iou",
    "needs_backward",
    "strategy_names",
]


def _as_mask(mask: np.ndarray | None, side: str) -> np.ndarray | None:
    if mask is None:
        return None
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskError(f"fusion: {side} mask must be 2-D (H, W), got shape {arr.shape}")
    return arr.astype(bool, copy=False)


def _pair(
    forward: np.ndarray | None, backward: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    f = _as_mask(forward, "forward")
    b = _as_mask(backward, "backward")
    if f is not None and b is not None and f.shape != b.shape:
        raise MaskError(
            f"fusion: forward mask shape {f.shape} does not match backward mask shape {b.shape}"
        )
    return f, b


def _copy(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else mask.copy()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks; 1.0 when both are empty (they agree perfectly)."""
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b)) / float(union)


def _one_sided(f: np.ndarray | None, b: np.ndarray | None) -> tuple[bool, np.ndarray | None]:
    """The shared "if one side is missing or empty, use the other" rule.

    Returns (decided, result). Both missing -> None; both empty -> empty mask.
    """
    if f is None and b is None:
        return True, None
    if f is None:
        return True, b.copy()
    if b is None:
        return True, f.copy()
    f_any, b_any = bool(f.any()), bool(b.any())
    if not f_any:
        return True, b.copy()
    if not b_any:
        return True, f.copy()
    return False, None


def fuse(
    forward: np.ndarray | None, backward: np.ndarray | None, tau: float
) -> np.ndarray | None:
    """Fuse the forward- and backward-propagated masks of one frame (paper Eq. 4-6).

    Both non-empty: their intersection when IoU(forward, backward) >= `tau` (the sides agree, so
    keep only what both are sure of), their union otherwise (they disagree, so keep both
    hypotheses rather than drop part of the object). One side None or empty: the other side.
    Both None: None. Both empty: an empty mask.

    `tau` must lie in [0, 1]: tau = 0 always intersects, tau > 1 would always unite.
    """
    if not (0.0 <= float(tau) <= 1.0):
        raise ConfigError(f"fusion: tau must be in [0, 1], got {tau}")
    f, b = _pair(forward, backward)
    decided, out = _one_sided(f, b)
    if decided:
        return out
    if mask_iou(f, b) >= tau:
        return f & b
    return f | b


@dataclass(frozen=True)
class FusionContext:
    """What a strategy may look at besides the two masks.

    `dist_forward` / `dist_backward`: frames between this frame and the anchor each side was
    propagated from (None when that side has no anchor). `tau`: the IoU threshold of `fuse`.
    `score_forward` / `score_backward`: the backend's confidence in each side's mask, in [0, 1]
    (`MaskPredictor.object_score`); None when the backend gave none.
    """

    tau: float
    dist_forward: int | None = None
    dist_backward: int | None = None
    score_forward: float | None = None
    score_backward: float | None = None


class Strategy(Protocol):
    def __call__(
        self, forward: np.ndarray | None, backward: np.ndarray | None, ctx: FusionContext
    ) -> np.ndarray | None: ...


def _bidirectional(f, b, ctx: FusionContext):
    return fuse(f, b, ctx.tau)


def _forward_only(f, b, ctx: FusionContext):
    # Upstream's released behaviour: each anchor's mask is carried forward until the next anchor
    # and the backward side is never consulted (the runner does not even compute it).
    f, _ = _pair(f, None)
    return _copy(f)


def _prefer(first_is_forward: bool):
    def strategy(f, b, ctx: FusionContext):
        f, b = _pair(f, b)
        primary, fallback = (f, b) if first_is_forward else (b, f)
        if primary is not None and primary.any():
            return primary.copy()
        # The preferred side lost the object (or has no anchor): the other side is better than
        # nothing, and an empty primary is still returned as empty when both are empty.
        if fallback is not None and (fallback.any() or primary is None):
            return fallback.copy()
        return _copy(primary)

    return strategy


def _intersection(f, b, ctx: FusionContext):
    f, b = _pair(f, b)
    decided, out = _one_sided(f, b)
    return out if decided else f & b


def _union(f, b, ctx: FusionContext):
    f, b = _pair(f, b)
    decided, out = _one_sided(f, b)
    return out if decided else f | b


def _by_area(larger: bool):
    def strategy(f, b, ctx: FusionContext):
        f, b = _pair(f, b)
        decided, out = _one_sided(f, b)
        if decided:
            return out
        af, ab = np.count_nonzero(f), np.count_nonzero(b)
        # Ties go to the forward side so that the result is deterministic.
        take_f = af >= ab if larger else af <= ab
        return (f if take_f else b).copy()

    return strategy


def _nearest(f, b, ctx: FusionContext):
    f, b = _pair(f, b)
    decided, out = _one_sided(f, b)
    if decided:
        return out
    df = ctx.dist_forward if ctx.dist_forward is not None else np.inf
    db = ctx.dist_backward if ctx.dist_backward is not None else np.inf
    # A frame exactly half-way takes the forward side (ties are deterministic).
    return (f if df <= db else b).copy()


CONFIDENCE_RATIO = 0.2
"""`confidence`: two disagreeing sides are united unless one side's weight (backend score per
frame of distance from its anchor) is below this fraction of the other's. Chosen on the tuned
davis16-mini sequences (BENCHMARKS.md): 0.1-0.2 tie with the paper's rule, 0.25-0.7 are worse."""


def _confidence(f, b, ctx: FusionContext):
    f, b = _pair(f, b)
    decided, out = _one_sided(f, b)
    if decided:
        return out
    if mask_iou(f, b) >= ctx.tau:
        # The sides agree: the paper's intersection.
        return f & b
    # They disagree. The union keeps what either side found (the paper's rule), unless one side
    # is far less trusted: then it is more likely to add a wrong region than a missed part.
    # Errors grow with distance from the anchor, so a side's weight is its score per frame.
    sf = 1.0 if ctx.score_forward is None else max(float(ctx.score_forward), 0.0)
    sb = 1.0 if ctx.score_backward is None else max(float(ctx.score_backward), 0.0)
    wf = sf / max(ctx.dist_forward or 1, 1)
    wb = sb / max(ctx.dist_backward or 1, 1)
    if min(wf, wb) >= CONFIDENCE_RATIO * max(wf, wb):
        return f | b
    return (f if wf > wb else b).copy()


STRATEGIES: dict[str, Strategy] = {
    "bidirectional": _bidirectional,
    "forward": _forward_only,
    "prefer-left": _prefer(True),
    "prefer-right": _prefer(False),
    "intersection": _intersection,
    "union": _union,
    "larger": _by_area(True),
    "smaller": _by_area(False),
    "nearest": _nearest,
    "confidence": _confidence,
}
"""Every fusion strategy by name. Except `forward`, all fall back to the other side when one side
is None or empty; `prefer-left`/`prefer-right` take their side whenever it is non-empty,
`nearest` takes the side whose anchor is fewer frames away, `confidence` is the paper's rule that
drops a disagreeing side the backend trusts far less (score per frame of distance; without scores
only distance counts)."""

STRATEGY_DESCRIPTIONS: dict[str, str] = {
    "bidirectional": "intersection if IoU >= tau else union (paper Eq. 4-6)",
    "forward": "forward propagation only (upstream's released behaviour)",
    "prefer-left": "the forward (left-anchor) mask, backward if it is empty",
    "prefer-right": "the backward (right-anchor) mask, forward if it is empty",
    "intersection": "always the intersection",
    "union": "always the union",
    "larger": "the mask with more pixels",
    "smaller": "the mask with fewer pixels",
    "nearest": "the side whose anchor is nearer in time",
    "confidence": "intersection if IoU >= tau, else union unless one side's confidence / distance is < 0.2x the other's",
}


def strategy_names() -> list[str]:
    """Names accepted by `get_strategy` (and the CLI's --fusion)."""
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by name; unknown names raise `ConfigError` listing the valid ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown fusion strategy {name!r}; choose one of: {', '.join(STRATEGIES)}"
        ) from None


def needs_backward(name: str) -> bool:
    """Whether the strategy looks at the backward side at all (the runner skips it if not)."""
    return name != "forward"
