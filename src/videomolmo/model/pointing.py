"""`point_video`: the model over a whole video, with a frame-feature cache and batching.

Two things upstream VideoMolmo does not do:
- **frame-feature cache**: each frame's ViT features are computed once per video and reused as
  context for the frames after it (upstream re-encodes the l previous frames at every step, 5x
  the vision work at k=1). Only the features still needed are kept (at most batch + l frames),
  so memory is flat in the video's length.
- **batching**: sampled frames are independent given their features, so their prompts are
  left-padded into one batch and generated together.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from videomolmo.errors import ConfigError
from videomolmo.model.point_head import read_points, resolve_point_decode
from videomolmo.model.preprocess import collate
from videomolmo.model.temporal import temporal_class
from videomolmo.points import parse_points, parse_points_percent
from videomolmo.settings import anchor_frames, check_query
from videomolmo.video import open_video

CONTEXT_MODES = ("normal", "repeat", "shuffle", "none")


def check_context_mode(mode: str) -> str:
    if mode not in CONTEXT_MODES:
        raise ConfigError(f"context must be one of {', '.join(CONTEXT_MODES)}, got {mode!r}")
    return mode


def apply_context_mode(mode: str, context: torch.Tensor, current: torch.Tensor,
                       donor: torch.Tensor | None = None) -> torch.Tensor:
    """The context features the temporal module gets under an inference-time ablation.

    `normal`: the real mean of the l previous frames; `repeat`: the current frame as its own
    context (a still scene: the mean of l copies of it); `shuffle`: `donor`, the context of the
    same frame positions in another clip. (`none` switches the module off, so no context is
    computed at all.) All tensors (B, patches, dim)."""
    check_context_mode(mode)
    if mode == "normal":
        return context
    if mode == "repeat":
        return current.clone()
    if mode == "shuffle":
        if donor is None or donor.shape != context.shape:
            raise ConfigError("context 'shuffle' needs another clip's context of the same shape")
        return donor
    raise ConfigError("context 'none' switches the temporal module off; there is no context to build")


@dataclass
class FramePoints:
    """The model's answer for one frame: generated text and its points in pixels (N, 2) (x, y).

    `scores` (N,): each point's confidence in 0..1, the geometric mean of the probabilities of
    the tokens that wrote it (see `point_scores`)."""

    frame_idx: int
    text: str
    points_px: np.ndarray = field(repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


class VideoPoints(list):
    """A list of `FramePoints` in frame order; `get(i)` gives frame i's points (N, 2)."""

    def get(self, frame_idx: int, default=None):
        for fp in self:
            if fp.frame_idx == frame_idx:
                return fp.points_px
        return default


def point_scores(tokenizer, ids: Sequence[int], probs: Sequence[float], num_points: int) -> np.ndarray:
    """Per-point confidence from token probabilities.

    A point's tokens run from just after the previous point was complete to the token that
    completed it, so the first point also carries the decision to point at all. Its score is the
    geometric mean of those tokens' probabilities (independent of how many tokens a number took).
    """
    scores = np.zeros(num_points)
    if not num_points or not len(ids):
        return scores
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
    start, found = 0, 0
    for i in range(len(ids)):
        n = len(parse_points_percent(tokenizer.decode(list(ids[: i + 1]))))
        while found < min(n, num_points):
            scores[found] = float(np.exp(logp[start:i + 1].mean()))
            found += 1
            start = i + 1
        if found == num_points:
            break
    # Points only readable from the whole text (not from any prefix) get the answer's mean.
    scores[found:] = float(np.exp(logp.mean()))
    return scores

def point_video(model, processor, video, query: str, k: int | None = None, l: int | None = None,
                batch_size: int = 8, frames: Iterable[int] | None = None, temporal: bool = True,
                feature_cache: bool = True, max_new_tokens: int | None = None,
                progress: Callable[[int, int], None] | None = None, bf16: bool | None = None,
                context: str = "normal", context_video=None, point_decode: str | None = None) -> VideoPoints:
    """Point at `query` in every k-th frame of `video` (or at the given `frames`).

    Args:
        video: a `videomolmo.video.Video`, a path, or a (T, H, W, 3) uint8 array / frame list.
        k: sampling stride (None: every frame); `frames` overrides it with explicit indices.
        l: context frames (default: the model's `context_frames`); the raw frames before each
            sampled frame, black frames padding the start.
        batch_size: prompts encoded and generated together (left padding).
        temporal: False runs the model without its temporal module (single-frame ablation).
        feature_cache: False re-encodes every context frame for every sampled frame, as
            upstream does (for benchmarks).
        bf16: bfloat16 autocast; default on when the model sits on a CUDA device.
        context: inference-time context ablation (`apply_context_mode`): normal | repeat |
            shuffle (needs `context_video`, another clip) | none (module off, as temporal=False).
        point_decode: "text" (the coordinate digits), "patch" (the patch-selection head,
            `point_head.py`, places the points the text counts), "patch-count" (one point per
            selected patch group) or "patch-extra" ("patch" plus each further group the head
            selects that the text's points missed); default: "patch-extra" when the model has
            the head, else "text".
    Returns `VideoPoints` (a list of `FramePoints(frame_idx, text, points_px)`).
    """
    check_query(query)
    return point_video_queries(model, processor, video, [query], k=k, l=l, batch_size=batch_size, frames=frames,
                               temporal=temporal, feature_cache=feature_cache, max_new_tokens=max_new_tokens,
                               progress=progress, bf16=bf16, context=context, context_video=context_video,
                               point_decode=point_decode)[query]

def point_video_queries(model, processor, video, queries: Sequence[str], k: int | None = None, l: int | None = None,
                        batch_size: int = 8, frames: Iterable[int] | None = None, temporal: bool = True,
                        feature_cache: bool = True, max_new_tokens: int | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        bf16: bool | None = None, context: str = "normal",
                        context_video=None, point_decode: str | None = None) -> dict[str, VideoPoints]:
    """`point_video` for several queries on one video: each frame's features are computed once
    and shared by all queries (e.g. every expression of a Ref-DAVIS video). Returns
    `{query: VideoPoints}`; arguments as in `point_video`."""
    queries = list(dict.fromkeys(queries))
    if not queries:
        raise ConfigError("no queries given")
    for q in queries:
        check_query(q)  # validation only: each query is answered under its own text
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_context_mode(context)
    if context == "shuffle" and context_video is None:
        raise ConfigError("context 'shuffle' needs context_video: another clip to take the context from")
    cfg = model.config
    decode = resolve_point_decode(point_decode, cfg)
    use_ctx = (temporal and context != "none" and temporal_class(cfg.temporal).uses_context
               and cfg.context_frames > 0)
    l = (cfg.context_frames if l is None else int(l)) if use_ctx else 0
    if use_ctx and l < 1:
        raise ConfigError(f"l (context frames) must be >= 1 for a temporal model, got {l}")
    vid = open_video(video)
    n = len(vid)
    donor = open_video(context_video) if use_ctx and context == "shuffle" else None
    targets = sorted({int(i) for i in frames}) if frames is not None else anchor_frames(n, 1 if k is None else k)
    for t in targets:
        if not 0 <= t < n:
            raise ConfigError(f"frame index {t} outside a {n}-frame video")
    tok = processor.tokenizer
    # Frames per chunk: enough that one generate call holds ~batch_size prompts.
    step = max(1, batch_size // len(queries))
    cache: dict[int, torch.Tensor] = {}
    black: list[torch.Tensor] = []
    results = {q: VideoPoints() for q in queries}
    was_training = model.training
    model.eval()
    on_cuda = model.device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (on_cuda if bf16 is None else bf16 and on_cuda) \
        else contextlib.nullcontext()
    done = 0
    try:
        for start in range(0, len(targets), step):
            chunk = targets[start:start + step]
            needed = set(chunk)
            if l:
                for t in chunk:
                    needed.update(range(max(0, t - l), t))
            to_read = sorted(i for i in needed if i not in cache or i in chunk)
            frames_np = dict(vid.iter_frames(to_read))
            image_inputs = {t: processor.encode_image(frames_np[t]) for t in chunk}
            with torch.no_grad(), autocast:
                if feature_cache:
                    _encode_missing(model, processor, frames_np, image_inputs, cache, sorted(needed))
                    feats = torch.stack([cache[t] for t in chunk])
                else:
                    feats = _encode_list(model, [image_inputs[t].crops for t in chunk])
                ctx_feats = None
                if l:
                    if not black and any(t < l for t in chunk):
                        first = next(iter(frames_np.values()))
                        black.append(_encode_list(model, [processor.encode_image(np.zeros_like(first)).crops])[0])
                    ctx_feats = []
                    for t in chunk:
                        prev = list(range(t - l, t))
                        if feature_cache:
                            stack = [cache[i] if i >= 0 else black[0] for i in prev]
                        else:  # upstream: re-encode the l previous frames for every frame
                            real = [i for i in prev if i >= 0]
                            enc = list(_encode_list(model, [processor.encode_image(frames_np[i]).crops
                                                            for i in real])) if real else []
                            stack = [black[0]] * (l - len(real)) + enc
                        ctx_feats.append(torch.stack(stack).mean(0))
                    ctx_feats = torch.stack(ctx_feats)
                    donor_ctx = None
                    if donor is not None:
                        donor_ctx = _donor_context(model, processor, donor, chunk, l, black[0] if black else None)
                    ctx_feats = apply_context_mode(context, ctx_feats, feats, donor_ctx)
                pairs = [(j, q) for q in queries for j in range(len(chunk))]
                for s in range(0, len(pairs), batch_size):
                    sub = pairs[s:s + batch_size]
                    rows = torch.tensor([j for j, _ in sub])
                    exs = [processor(None, None, q, image=image_inputs[chunk[j]]) for j, q in sub]
                    batch = collate(exs, tok.pad_token_id, padding_side="left")
                    gen, probs, *cov = model.generate(
                        batch, max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                        frame_features=feats[rows], context_features=ctx_feats[rows] if ctx_feats is not None else None,
                        use_temporal=bool(l), return_probs=True, return_coverage=decode != "text")
                    for r, ((j, q), ids, pr) in enumerate(zip(sub, gen, probs)):
                        t = chunk[j]
                        text = tok.decode(ids)
                        h, w = frames_np[t].shape[:2]
                        pts = read_points(decode, parse_points(text, w, h), cov[0][r] if cov else None, (h, w), cfg)
                        results[q].append(FramePoints(t, text, pts, point_scores(tok, ids, pr, len(pts))))
            if feature_cache:
                # Keep only what later frames can still use as context.
                nxt = targets[start + step] if start + step < len(targets) else n
                for i in [i for i in cache if i < nxt - l]:
                    del cache[i]
            done += len(chunk)
            if progress is not None:
                progress(done, len(targets))
    finally:
        model.train(was_training)
    return results


def _donor_context(model, processor, donor, chunk: Sequence[int], l: int,
                   black: torch.Tensor | None) -> torch.Tensor:
    """Mean features of `donor`'s frames at the same l positions before each frame of `chunk`
    (clamped to the donor's length; black frames before its start, as for the real context)."""
    m = len(donor)
    idx = sorted({min(i, m - 1) for t in chunk for i in range(t - l, t) if i >= 0})
    frames = dict(donor.iter_frames(idx)) if idx else {}
    enc = dict(zip(idx, _encode_list(model, [processor.encode_image(frames[i]).crops for i in idx]))) if idx else {}
    if black is None and any(i < 0 for t in chunk for i in range(t - l, t)):
        first = next(iter(donor.iter_frames([0])))[1]
        black = _encode_list(model, [processor.encode_image(np.zeros_like(first)).crops])[0]
    out = [torch.stack([enc[min(i, m - 1)] if i >= 0 else black for i in range(t - l, t)]).mean(0)
           for t in chunk]
    return torch.stack(out)


def _encode_list(model, crops_list: Sequence[np.ndarray]) -> torch.Tensor:
    arr = torch.from_numpy(np.stack(crops_list))
    return model.encode_frames(arr)

def _encode_missing(model, processor, frames_np: dict[int, np.ndarray], image_inputs: dict, cache: dict,
                    indices) -> None:
    missing = [i for i in indices if i not in cache]
    if not missing:
        return
    crops = [image_inputs[i].crops if i in image_inputs else processor.encode_image(frames_np[i]).crops
             for i in missing]
    feats = _encode_list(model, crops)
    for i, f in zip(missing, feats):
        cache[i] = f
