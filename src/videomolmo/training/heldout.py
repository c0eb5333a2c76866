"""Held-out pointing metrics on synthetic clips: what training tracks besides the loss.

Issue 5's probe 1 showed the loss can fall through a decimal-digit shortcut while the model
points at the same place for every clip, so training periodically decodes held-out clips
(the `val` or `test` seed stream, never seen in training) and scores the points with the
Molmo protocol (`videomolmo.metrics.point_prf`), per expression kind, plus counting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videomolmo.errors import ConfigError
from videomolmo.metrics import count_accuracy, count_mae, point_prf
from videomolmo.points import parse_points
from videomolmo.synth import Clip, SynthConfig, clip_rng, generate_clip


@dataclass
class HeldOutItem:
    clip: Clip
    expression: int
    t: int
    clip_index: int = 0

    @property
    def kind(self) -> str:
        return self.clip.expressions[self.expression].kind


def heldout_items(n_clips: int, seed: int = 0, split: str = "val", preset: str = "eval",
                  context: int = 4, size: int = 112) -> list[HeldOutItem]:
    """Every expression of `n_clips` held-out clips, scored at their last frame (t = l), so
    the full l-frame context exists."""
    cfg = SynthConfig.from_name(preset, size=size, frames=context + 1)
    items = []
    for i in range(n_clips):
        clip = generate_clip(clip_rng(seed, split, i), cfg)
        items.extend(HeldOutItem(clip, j, context, i) for j in range(len(clip.expressions)))
    return items


def predict_points(model, processor, tokenizer, frames_list, queries, batch_size: int = 16,
                   max_new_tokens: int | None = None, use_temporal: bool = True,
                   point_decode: str | None = None) -> list[tuple[np.ndarray, str]]:
    """Greedy point text and pixel points for (frames, query) pairs; `frames[-1]` is
    the frame pointed at, the rest its context (ignored with `use_temporal=False`).
    `point_decode` as in `point_video` (default: the model's own way)."""
    import torch

    from videomolmo.model import collate
    from videomolmo.model.point_head import read_points, resolve_point_decode

    cfg = model.config
    decode = resolve_point_decode(point_decode, cfg)

    out = []
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(queries), batch_size):
            exs = [processor(f[-1], list(f[:-1]), q) for f, q in
                   zip(frames_list[s:s + batch_size], queries[s:s + batch_size])]
            batch = collate(exs, tokenizer.pad_token_id, padding_side="left")
            with torch.no_grad():
                gen = model.generate(batch, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                                     use_temporal=use_temporal, return_coverage=decode != "text")
                gen, cov = gen if decode != "text" else (gen, None)
            for r, (f, ids) in enumerate(zip(frames_list[s:s + batch_size], gen)):
                text = tokenizer.decode(ids)
                h, w = f[-1].shape[:2]
                pts = read_points(decode, parse_points(text, w, h), None if cov is None else cov[r], (h, w), cfg)
                out.append((pts, text))
    finally:
        model.train(was_training)
    return out


def score_items(items: list[HeldOutItem], preds: list[np.ndarray]) -> dict:
    """Per-kind and overall point P/R/F1 (micro over items), hit rate of single-object
    queries, and counting MAE / exact match on `count` queries."""
    per_kind: dict[str, list] = {}
    counts_pred, counts_gt = [], []
    for it, p in zip(items, preds):
        e = it.clip.expressions[it.expression]
        vis = [k for k in e.obj_ids if it.clip.points[k][it.t] is not None]
        gts = it.clip.target_points(vis, it.t)
        masks = [it.clip.masks[k, it.t] for k in vis]
        s = point_prf(p, gts, masks)
        per_kind.setdefault(e.kind, []).append(s)
        if e.kind == "count":
            counts_pred.append(len(p))
            counts_gt.append(len(gts))
    res: dict = {"n": len(items)}
    for kind, scores in sorted(per_kind.items()):
        res[kind] = {
            "n": len(scores),
            "precision": float(np.mean([s.precision for s in scores])),
            "recall": float(np.mean([s.recall for s in scores])),
            "f1": float(np.mean([s.f1 for s in scores])),
        }
    allf = [s.f1 for v in per_kind.values() for s in v]
    res["f1"] = float(np.mean(allf)) if allf else float("nan")
    if counts_gt:
        res["count"]["mae"] = count_mae(counts_pred, counts_gt)
        res["count"]["exact"] = count_accuracy(counts_pred, counts_gt)
    return res


def item_rows(items: list[HeldOutItem], preds: list[np.ndarray], texts: list[str] | None = None) -> list[dict]:
    """One row per item in the layout `videomolmo eval` writes (key, expression, category, P /
    R / F1 / tp / fp / fn, and count / count_gt on counting queries), so the summary tables and
    `eval-compare` work on held-out items too. Keys are `<clip index>/<expression index>`."""
    rows = []
    for i, (it, p) in enumerate(zip(items, preds)):
        e = it.clip.expressions[it.expression]
        vis = [k for k in e.obj_ids if it.clip.points[k][it.t] is not None]
        s = point_prf(p, it.clip.target_points(vis, it.t), [it.clip.masks[k, it.t] for k in vis])
        row = {"key": f"{it.clip_index}/{it.expression}", "expression": e.text, "category": e.kind,
               "P": s.precision, "R": s.recall, "F1": s.f1, "tp": s.hits, "fp": s.n_pred - s.hits,
               "fn": s.n_gt - s.hits, "n_pred": s.n_pred}
        if e.kind == "count":
            row.update(count=len(p), count_gt=len(vis))
        if texts is not None:
            row["text"] = texts[i]
        rows.append(row)
    return rows


def item_frames(items: list[HeldOutItem], l: int, context: str = "normal") -> list[list[np.ndarray]]:
    """Per item, its context frames then the frame pointed at, under an inference-time context
    ablation (`videomolmo.model.pointing.apply_context_mode`): `normal` the l real previous
    frames; `repeat` the current frame l times (a still scene); `shuffle` the same positions of
    the next other clip (cyclic, so every item gets another clip's context); `none` as normal
    (the caller switches the module off)."""
    from videomolmo.model.pointing import check_context_mode

    check_context_mode(context)
    first: dict[int, HeldOutItem] = {}
    for it in items:
        first.setdefault(it.clip_index, it)
    order = sorted(first)
    if context == "shuffle" and len(order) < 2:
        raise ConfigError("context 'shuffle' needs at least two clips")
    donor = {c: first[order[(j + 1) % len(order)]].clip for j, c in enumerate(order)}
    out = []
    for it in items:
        cur = it.clip.frames[it.t]
        if context == "repeat":
            ctx = [cur] * l
        elif context == "shuffle":
            d = donor[it.clip_index].frames
            ctx = [d[min(i, len(d) - 1)] for i in range(max(0, it.t - l), it.t)]
        else:
            ctx = [it.clip.frames[i] for i in range(max(0, it.t - l), it.t)]
        out.append(ctx + [cur])
    return out


def evaluate_model(model, processor, tokenizer, items: list[HeldOutItem], batch_size: int = 16,
                   max_new_tokens: int | None = None, context: str = "normal",
                   rows: list | None = None, point_decode: str | None = None) -> dict:
    """Decode and score held-out items (see `score_items`) under a context ablation
    (`item_frames`; `none` runs the model without its temporal module). Per-item rows
    (`item_rows`) are appended to `rows` when given."""
    l = processor.config.context_frames
    frames = item_frames(items, l, context)
    queries = [it.clip.expressions[it.expression].text for it in items]
    preds = predict_points(model, processor, tokenizer, frames, queries, batch_size, max_new_tokens,
                           use_temporal=context != "none", point_decode=point_decode)
    if rows is not None:
        rows.extend(item_rows(items, [p for p, _ in preds], [t for _, t in preds]))
    return score_items(items, [p for p, _ in preds])
