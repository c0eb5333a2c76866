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
from videomolmo.video import open_video


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


def check_rgb_frame(frame: Any, where: str = "frame") -> np.ndarray:
    """`frame` as an RGB uint8 (H, W, 3) array, or `VideoMolmoError` saying what it is instead."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise VideoMolmoError(f"{where}: expected an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)  # OpenCV wants contiguous rows


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
    """A point-prompted video mask predictor (see the module docstring).

    The shared part lives here: opening the video (`init_state`), checking frame indices and
    frames, the click rule, score bookkeeping and the propagation walk. A backend implements
    three things:

    - `predict_image(frame, points, labels)`: single-frame point -> mask (annotation uses it);
    - `_mask_from_prompt(state, frame_idx, obj_id, points, labels) -> (mask, score)`: the mask of
      one object on a prompted frame, from *all* its clicks there;
    - `_track_step(state, frame_idx, reverse) -> {obj_id: (mask, score)}`: the masks on the next
      frame of a walk (`_start_walk` is called before the first), prompted frames included.

    and may override `_open(state)` (sessions, caches) and `_start_walk(state, start, reverse)`.

    The click rule, as SAM2's interactive predictor: a second `add_points` on the same frame and
    object *adds* its clicks to the earlier ones (positives and negatives alike) and the mask is
    recomputed from all of them; `reset_state` forgets every click.
    """

    name: str = "base"
    # True when `predict_frame` reads more than the frame itself (neighbouring frames' motion),
    # so a caller holding the video should prefer it to `predict_image`.
    uses_video_cue: bool = False

    # -- what a backend implements ---------------------------------------------------------

    @abstractmethod
    def predict_image(
        self, frame: np.ndarray, points: np.ndarray, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """Single-frame point-to-mask: bool (H, W) mask for one object on one RGB frame."""

    @abstractmethod
    def _mask_from_prompt(
        self, state: PredictorState, frame_idx: int, obj_id: int, points: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """(bool (H, W) mask, score in [0, 1]) of `obj_id` on `frame_idx` from all its clicks
        there (`points` (N, 2) pixels inside the frame, N >= 1; `labels` (N,) 1/0)."""

    @abstractmethod
    def _track_step(self, state: PredictorState, frame_idx: int, reverse: bool) -> dict[int, tuple[np.ndarray, float]]:
        """{obj_id: (bool (H, W) mask, score)} on `frame_idx`, the next frame of the current walk."""

    def _open(self, state: PredictorState) -> None:
        """Backend-specific state for a new video (sessions, caches) in `state.extra`."""

    def _start_walk(self, state: PredictorState, start_frame: int, reverse: bool) -> None:
        """Forget what the previous walk carried from frame to frame."""

    # -- shared ----------------------------------------------------------------------------

    def init_state(self, video: Any) -> PredictorState:
        """Open a state on a video (a `Video`, a frame folder / file path, or an array of frames);
        frames are read lazily, one at a time."""
        vid = open_video(video)
        if hasattr(vid, "height") and hasattr(vid, "width"):
            height, width = int(vid.height), int(vid.width)
        else:  # a duck-typed video: its first frame says
            height, width = self._checked(vid[0], "frame 0").shape[:2]
        state = PredictorState(video=vid)
        state.extra.update(num_frames=len(vid), size=(height, width))
        self._open(state)
        return state

    def _checked(self, frame: Any, where: str) -> np.ndarray:
        return check_rgb_frame(frame, f"{self.name} backend: {where}")

    def frame_index(self, state: PredictorState, frame_idx: Any) -> int:
        """`frame_idx` as an int inside the video, or `VideoMolmoError`."""
        n = state.extra["num_frames"]
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)) or not 0 <= frame_idx < n:
            raise VideoMolmoError(f"{self.name} backend: frame index {frame_idx} is outside the video (0..{n - 1})")
        return int(frame_idx)

    def frame(self, state: PredictorState, frame_idx: int) -> np.ndarray:
        """Frame `frame_idx` of the state's video, checked: RGB uint8 of the video's size."""
        frame = self._checked(state.video[self.frame_index(state, frame_idx)], f"frame {frame_idx}")
        if frame.shape[:2] != state.extra["size"]:
            h, w = state.extra["size"]
            raise VideoMolmoError(f"{self.name} backend: frame {frame_idx} is {frame.shape[1]}x{frame.shape[0]}, "
                                  f"the video's first frame is {w}x{h}")
        return frame

    def add_points(
        self,
        state: PredictorState,
        frame_idx: int,
        obj_id: int,
        points: np.ndarray,
        labels: np.ndarray | None = None,
    ) -> np.ndarray:
        """Click on object `obj_id` on frame `frame_idx`; return its bool (H, W) mask there.

        `points` are (N, 2) pixel (x, y); `labels` (N,) are 1 for positive, 0 for negative (all
        positive when None). Clicks add to the earlier ones on the same frame and object.
        NaN / out-of-frame points are dropped with a warning; with no usable click at all the
        object's mask there is empty (score 0) rather than an error, so one bad point does not
        sink a video.
        """
        idx, oid = self.frame_index(state, frame_idx), int(obj_id)
        height, width = state.extra["size"]
        pts, lab = clean_points(points, labels, (width, height), where=f"{self.name} backend: ")
        prev = state.prompts.get(idx, {}).get(oid)
        if prev is not None:
            pts, lab = np.concatenate([prev[0], pts]), np.concatenate([prev[1], lab])
        state.prompts.setdefault(idx, {})[oid] = (pts, lab)
        if len(pts):
            mask, score = self._mask_from_prompt(state, idx, oid, pts, lab)
        else:
            mask, score = np.zeros((height, width), dtype=bool), 0.0
        state.masks.setdefault(idx, {})[oid] = mask
        state.scores.setdefault(idx, {})[oid] = float(score)
        return mask

    def propagate(
        self,
        state: PredictorState,
        start_frame: int,
        end_frame: int,
        reverse: bool = False,
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Yield `(frame_idx, {obj_id: bool mask})` for every frame from `start_frame` to
        `end_frame` inclusive, walking backwards when `reverse` (then start >= end). The
        prompted frame itself is yielded with its prompted masks; frames before any prompt on
        the walk yield `{}`. After each frame, `object_score` gives its masks' confidence."""
        start, end = self.frame_index(state, start_frame), self.frame_index(state, end_frame)
        if (end < start) != reverse and end != start:
            direction = "backward" if reverse else "forward"
            raise VideoMolmoError(f"{self.name} backend: cannot propagate {direction} from frame {start} to "
                                  f"frame {end} (reverse={reverse})")
        self._start_walk(state, start, reverse)
        last: int | None = None
        for idx in range(start, end + (-1 if reverse else 1), -1 if reverse else 1):
            out = self._track_step(state, idx, reverse)
            # Scores of the frame just left are dropped unless it was prompted: flat memory.
            if last is not None and last not in state.masks:
                state.scores.pop(last, None)
            if idx not in state.masks:
                state.scores[idx] = {oid: float(s) for oid, (_, s) in out.items()}
            last = idx
            yield idx, {oid: m for oid, (m, _) in out.items()}

    def predict_frame(
        self, state: PredictorState, frame_idx: int, points: np.ndarray, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """One-off point -> mask on frame `frame_idx` of an open video, not kept as a prompt
        (the annotation pipeline tries several clicks per frame). Backends that use the
        neighbouring frames override it (`uses_video_cue`); by default it is `predict_image`."""
        return np.asarray(self.predict_image(self.frame(state, frame_idx), points, labels), dtype=bool)

    def object_score(self, state: PredictorState, frame_idx: int, obj_id: int) -> float:
        """How sure the backend is of object `obj_id`'s mask on `frame_idx`, in [0, 1].

        Valid for prompted frames and for the frame `propagate` yielded last; 1.0 when the backend
        computes no score (or no longer holds it).
        """
        return float(state.scores.get(frame_idx, {}).get(obj_id, 1.0))

    def reset_state(self, state: PredictorState) -> None:
        """Forget every prompt, mask and score, keeping the video open."""
        state.prompts.clear()
        state.masks.clear()
        state.scores.clear()
        extra = {k: state.extra[k] for k in ("num_frames", "size")}
        state.extra.clear()
        state.extra.update(extra)
        self._open(state)
