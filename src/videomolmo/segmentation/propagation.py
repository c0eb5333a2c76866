"""Anchor-wise bidirectional mask propagation (VideoMolmo Sec. 4.2).

Anchors are frames 0, k, 2k, ... . At each anchor the points become masks (one object id per
positive point; the frame's mask is the union of its objects). Every frame strictly between
anchors a and a+k gets two candidates: anchor a's masks propagated forward and anchor (a+k)'s
propagated backward, each from a state that holds only that anchor's prompts (so one side's
prompts never leak into the other), and a fusion strategy (`videomolmo.fusion`) turns the pair
into one mask. Frames after the last anchor are propagated forward only.

Only points on anchor frames are used: points given for other frames are ignored with a warning
(the model points at anchors; passing every frame's points with k=1 uses them all).

Everything streams: `segment_video` yields `(frame_idx, mask)` in frame order and holds at most
one segment (k frames) of masks and two predictor states at a time.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from videomolmo.errors import ConfigError, VideoMolmoError
from videomolmo.fusion import FusionContext, get_strategy, needs_backward
from videomolmo.segmentation.predictor import MaskPredictor, PredictorState, clean_points
from videomolmo.settings import anchor_frames
from videomolmo.video import open_video

__all__ = ["Segment", "anchor_frames", "iter_segments", "segment_video"]


Prompt = Any  # (N, 2) positive points, or a (points (N, 2), labels (N,)) pair


@dataclass
class Segment:
    """One anchor and the frames up to (not including) the next one.

    `forward[j]` / `backward[j]` are the candidate masks of frame `start + 1 + j`; `backward` is
    None for the tail after the last anchor and when the strategy never looks at it.
    `forward_scores[j]` / `backward_scores[j]` are the backend's confidence in those masks
    (`MaskPredictor.object_score`; 1.0 from backends that compute none), None when not recorded.
    """

    start: int
    end: int  # the next anchor, or the last frame + 1 for the tail
    anchor_mask: np.ndarray
    forward: list[np.ndarray]
    backward: list[np.ndarray] | None
    forward_scores: list[float] | None = None
    backward_scores: list[float] | None = None
    anchor_score: float | None = None

    def confidence(self, j: int | None) -> float | None:
        """The backend's confidence in frame `start + 1 + j` (`j` None: the anchor): the mean of
        the sides that looked at it (fusion combines them), None when no score was recorded."""
        if j is None:
            return self.anchor_score
        sides = [s[j] for s in (self.forward_scores, self.backward_scores) if s]
        return float(np.mean(sides)) if sides else None

    @property
    def is_tail(self) -> bool:
        return self.backward is None


def _prompt_points(points: Prompt, size: tuple[int, int], where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A `Prompt` (points, or a (points, labels) pair) validated by `predictor.clean_points`."""
    labels = None
    if isinstance(points, tuple) and len(points) == 2:
        points, labels = points
    return clean_points(points, labels, size, where=where)


class _RecentFrames:
    """Random access to a video that keeps the last `size` frames read.

    The runner walks each segment forward, then the next anchor's side backward over the same
    frames: without this a video file would be decoded (and seeked) twice per frame, and a
    reverse walk seeks for every frame.
    """

    def __init__(self, video: Any, size: int):
        self.video = video
        self.size = size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.video)

    def __getitem__(self, idx: int) -> np.ndarray:
        idx = int(idx)
        if idx in self._cache:
            self._cache.move_to_end(idx)
            return self._cache[idx]
        frame = self.video[idx]
        self._cache[idx] = frame
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return frame

    def __getattr__(self, name: str) -> Any:
        # frame_names, fps, size, ... of the underlying video.
        return getattr(self.video, name)


def _union(masks: Mapping[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for m in masks.values():
        out |= m
    return out


def _score_of(predictor: Any) -> Callable[[PredictorState, int, int], float]:
    # Backends registered by duck typing may lack `object_score`: they express no doubt.
    return getattr(predictor, "object_score", None) or (lambda state, fi, o: 1.0)


class _Anchor:
    """An anchor's own predictor state (None when the anchor has no positive point)."""

    def __init__(self, predictor: MaskPredictor, video: Any, idx: int, prompt, shape: tuple[int, int]):
        self.idx = idx
        self.shape = shape
        self.predictor = predictor
        self.state: PredictorState | None = None
        self.mask = np.zeros(shape, bool)
        self.score = 0.0  # no positive point: sure of nothing
        if prompt is None:
            return
        pts, lab = prompt
        pos, neg = pts[lab == 1], pts[lab == 0]
        if len(pos) == 0:
            return
        self.state = predictor.init_state(video)
        score_of = _score_of(predictor)
        scores = []
        for obj_id, p in enumerate(pos, start=1):
            pp = np.concatenate([p[None], neg]) if len(neg) else p[None]
            ll = np.concatenate([[1], np.zeros(len(neg), np.int64)])
            self.mask |= np.asarray(predictor.add_points(self.state, idx, obj_id, pp, ll), bool)
            scores.append(score_of(self.state, idx, obj_id))
        self.score = min(scores)  # as on propagated frames: the least sure object bounds the whole

    def walk(self, to: int) -> tuple[list[np.ndarray], list[float]]:
        """Masks of the frames from the anchor (exclusive) to `to` (inclusive), in walk order,
        and the backend's confidence in each (an empty side is sure of nothing: 0.0)."""
        n = abs(to - self.idx)
        if n == 0:
            return [], []
        if self.state is None:
            return [np.zeros(self.shape, bool) for _ in range(n)], [0.0] * n
        reverse = to < self.idx
        out, scores = [], []
        score_of = _score_of(self.predictor)
        for fi, objs in self.predictor.propagate(self.state, self.idx, to, reverse=reverse):
            if fi == self.idx:
                continue
            out.append(_union(objs, self.shape))
            # Scores are read before the iterator advances (backends keep only the latest).
            # Several objects make one mask: the least sure object bounds the whole.
            scores.append(min((score_of(self.state, fi, o) for o in objs), default=0.0))
        if len(out) != n:
            raise RuntimeError(f"{self.predictor.name} backend yielded {len(out)} frames, expected {n}")
        return out, scores

    def close(self) -> None:
        if self.state is not None:
            self.predictor.reset_state(self.state)
            self.state = None


def iter_segments(
    video: Any,
    points_by_frame: Mapping[int, Prompt],
    predictor: MaskPredictor,
    k: int,
    backward: bool = True,
    skip: Callable[[int, int], bool] | None = None,
) -> Iterator[Segment]:
    """The raw material of fusion: per anchor, its mask and the forward/backward candidates.

    Benchmarks cache these to sweep fusion strategies and tau without re-running the backend.
    `skip(start, end)` -> True leaves out the segment of frames start..end-1 without running the
    backend on it (resuming: a segment depends only on its own two anchors).
    """
    video = open_video(video)
    n = len(video)
    anchors = anchor_frames(n, k)
    # A segment's frames plus the anchors' motion neighbours: every frame is decoded once.
    video = _RecentFrames(video, size=int(k) + 8)
    first = np.asarray(video[0])
    shape = first.shape[:2]
    size = (shape[1], shape[0])
    prompts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    anchor_set = set(anchors)
    ignored = []
    for key, pts in points_by_frame.items():
        try:
            fi = int(key)
        except (TypeError, ValueError):
            raise VideoMolmoError(f"points: frame index {key!r} is not an integer") from None
        if not (0 <= fi < n):
            raise VideoMolmoError(f"points: frame index {fi} is beyond the video ({n} frames, 0..{n - 1})")
        if fi not in anchor_set:
            ignored.append(fi)
            continue
        prompts[fi] = _prompt_points(pts, size, where=f"frame {fi}: ")
    if ignored:
        warnings.warn(
            f"points on {len(ignored)} non-anchor frame(s) are ignored (k={k}, anchors are multiples "
            f"of k): {sorted(ignored)[:10]}{' ...' if len(ignored) > 10 else ''}",
            stacklevel=2,
        )

    cur: _Anchor | None = None
    try:
        for i, a in enumerate(anchors):
            nxt_idx = anchors[i + 1] if i + 1 < len(anchors) else None
            end = nxt_idx if nxt_idx is not None else n
            if skip is not None and skip(a, end):
                # Already done (a resumed run): segments only depend on their two anchors.
                if cur is not None:
                    cur.close()
                cur = None
                continue
            if cur is None:
                cur = _Anchor(predictor, video, a, prompts.get(a), shape)
            fwd, fwd_scores = cur.walk(end - 1)
            nxt = None
            bwd = bwd_scores = None
            if nxt_idx is not None:
                nxt = _Anchor(predictor, video, nxt_idx, prompts.get(nxt_idx), shape)
                if backward:
                    bwd, bwd_scores = nxt.walk(a + 1)
                    bwd, bwd_scores = bwd[::-1], bwd_scores[::-1]
            seg = Segment(a, end, cur.mask, fwd, bwd, fwd_scores, bwd_scores, cur.score)
            cur.close()
            yield seg
            cur = nxt
    finally:
        if cur is not None:
            cur.close()


def fuse_segment(
    seg: Segment, strategy: str, tau: float
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(frame_idx, mask)` for the anchor and every frame of one segment."""
    fn = get_strategy(strategy)
    yield seg.start, seg.anchor_mask
    for j, f in enumerate(seg.forward):
        t = seg.start + 1 + j
        b = seg.backward[j] if seg.backward is not None else None
        ctx = FusionContext(
            tau=tau,
            dist_forward=t - seg.start,
            dist_backward=(seg.end - t) if b is not None else None,
            score_forward=seg.forward_scores[j] if seg.forward_scores else None,
            score_backward=seg.backward_scores[j] if (b is not None and seg.backward_scores) else None,
        )
        out = fn(f, b, ctx)
        yield t, (out if out is not None else np.zeros_like(f))


def segment_video(
    video: Any,
    points_by_frame: Mapping[int, Prompt],
    predictor: MaskPredictor,
    k: int,
    tau: float,
    strategy: str,
    skip: Callable[[int, int], bool] | None = None,
    on_score: Callable[[int, float], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream `(frame_idx, bool mask)` for every frame of `video`, in frame order.

    `points_by_frame` maps frame index -> (N, 2) pixel points (x, y), all positive, or a
    `(points, labels)` pair with labels 1 = positive / 0 = negative. Each positive point is its
    own object (negatives apply to all of them); a frame's mask is the union of its objects.
    Anchors are 0, k, 2k, ...; only their points are used. An anchor without positive points
    yields an empty mask and an empty side (the other side then decides, per the strategy).
    NaN / out-of-frame points are dropped with a warning; frame indices outside the video, k <= 0,
    tau outside [0, 1] and unknown strategies raise `VideoMolmoError`.
    `skip(start, end)` -> True leaves out the frames start..end-1 of that anchor's segment (used
    to resume: the result of the other segments is unchanged).
    `on_score(frame_idx, confidence)` receives the backend's confidence in each frame's mask
    (`Segment.confidence`) just before that frame is yielded, when the backend gives one.
    """
    if not (0.0 <= float(tau) <= 1.0):
        raise ConfigError(f"tau must be in [0, 1], got {tau}")
    get_strategy(strategy)
    anchor_frames(1, k)
    for seg in iter_segments(video, points_by_frame, predictor, k=k, backward=needs_backward(strategy), skip=skip):
        for t, mask in fuse_segment(seg, strategy, tau):
            score = seg.confidence(None if t == seg.start else t - seg.start - 1)
            if on_score is not None and score is not None:
                on_score(t, score)
            yield t, mask
