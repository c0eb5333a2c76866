"""The mask-predictor interface shared by every backend.

Modelled on SAM2's video predictor: a state is opened on a video, point prompts are added for
object ids on a frame, and masks are propagated forward or backward over a frame range. A state
belongs to one propagation direction; bidirectional fusion opens a fresh state per side so that
prompts from one side never leak into the other.

Confidence: besides its masks, a backend may say how sure it is of each propagated mask, like
SAM2's object score. `object_score(state, frame_idx, obj_id)` returns a number in [0, 1] for a
frame `propagate` has just yielded (read it before advancing the iterator: backends keep only the
latest frame's scores so that memory stays flat). Backends that compute no score leave
`state.scores` empty and every lookup answers 1.0 ("no doubt expressed").
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from videomolmo.errors import VideoMolmoError


def clean_points(
    points: Any, labels: Any, size: tuple[int, int], where: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a point prompt: (points (N, 2) float64 pixels, labels (N,) int64 in {0, 1}).

    `size` is (width, height). Malformed arrays or labels raise `VideoMolmoError` (prefixed by
    `where`); NaN / infinite / out-of-frame points are dropped with a warning, because
    model-predicted points can fall off the frame and one bad point must not sink a video.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 2)
    elif pts.ndim == 1 and pts.size == 2:
        pts = pts.reshape(1, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise VideoMolmoError(f"{where}points must be an (N, 2) array of pixel (x, y), got shape {pts.shape}")
    if labels is None:
        lab = np.ones(len(pts), dtype=np.int64)
    else:
        lab = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(lab) != len(pts):
            raise VideoMolmoError(f"{where}{len(pts)} points but {len(lab)} labels")
        if not np.isin(lab, (0, 1)).all():
            raise VideoMolmoError(
                f"{where}point labels must be 0 (negative) or 1 (positive), got {sorted(set(lab.tolist()))}"
            )
    w, h = size
    ok = np.isfinite(pts).all(axis=1)
    ok[ok] = (pts[ok, 0] >= 0) & (pts[ok, 0] < w) & (pts[ok, 1] >= 0) & (pts[ok, 1] < h)
    if not ok.all():
        warnings.warn(
            f"{where}dropped {int((~ok).sum())} point(s) that are NaN or outside the {w}x{h} frame: "
            f"{pts[~ok].tolist()}",
            stacklevel=3,
        )
    return pts[ok], lab[ok]


@dataclass
class PredictorState:
    """What a backend keeps between calls for one video.

    `video` is a `videomolmo.video.Video` (random access by index, streaming iteration).
    `prompts` maps frame index -> object id -> (points (N, 2) pixels, labels (N,) 1=positive 0=negative).
    `masks` maps frame index -> object id -> bool (H, W) mask for frames the backend has resolved.
    `scores` maps frame index -> object id -> confidence in [0, 1] of that frame's mask; backends
    keep only the prompted frames and the frame most recently yielded by `propagate`.
    Backends may keep anything else they need in `extra` (features, memory banks, flow caches),
    and must prune it so memory stays flat in video length.
    """

    video: Any
    prompts: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    masks: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)
    scores: dict[int, dict[int, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class MaskPredictor(ABC):
    """A point-prompted video mask predictor (see the module docstring)."""

    name: str = "base"

    @abstractmethod
    def init_state(self, video: Any) -> PredictorState:
        """Open a state on a video (a `Video`, a frame folder / file path, or an array of frames)."""

    @abstractmethod
    def add_points(
        self,
        state: PredictorState,
        frame_idx: int,
        obj_id: int,
        points: np.ndarray,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Prompt object `obj_id` on frame `frame_idx`; return its bool (H, W) mask on that frame.

        `points` are (N, 2) pixel (x, y); `labels` (N,) are 1 for positive, 0 for negative
        (all positive when None).
        """

    @abstractmethod
    def propagate(
        self,
        state: PredictorState,
        start_frame: int,
        end_frame: int,
        reverse: bool = False,
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Yield `(frame_idx, {obj_id: bool mask})` for every frame from `start_frame` to
        `end_frame` inclusive, walking backwards when `reverse` (then start >= end).
        The prompted frame itself is yielded first, with its prompted masks."""

    @abstractmethod
    def predict_image(
        self, frame: np.ndarray, points: np.ndarray, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """Single-frame point-to-mask: bool (H, W) mask for one object on one RGB frame."""

    def object_score(self, state: PredictorState, frame_idx: int, obj_id: int) -> float:
        """How sure the backend is of object `obj_id`'s mask on `frame_idx`, in [0, 1].

        Valid for prompted frames and for the frame `propagate` yielded last; 1.0 when the backend
        computes no score (or no longer holds it).
        """
        return float(state.scores.get(frame_idx, {}).get(obj_id, 1.0))

    def reset_state(self, state: PredictorState) -> None:
        """Forget every prompt and mask, keeping the video open."""
        state.prompts.clear()
        state.masks.clear()
        state.scores.clear()
        state.extra.clear()
