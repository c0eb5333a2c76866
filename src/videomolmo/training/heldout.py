"""Held-out pointing metrics on synthetic clips: what training tracks besides the loss.

Issue 5's probe 1 showed the loss can fall through a decimal-digit shortcut while the model
points at the same place for every clip, so training periodically decodes held-out clips
(the `val` or `test` seed stream, never seen in training) and scores the points with the
Molmo protocol (`videomolmo.metrics.point_prf`), per expression kind, plus counting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videomolmo.synth import Clip, SynthConfig, clip_rng, generate_clip


@dataclass
class HeldOutItem:
    clip: Clip
    expression: int
    t: int

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
        items.extend(HeldOutItem(clip, j, context) for j in range(len(clip.expressions)))
    return items


def predict_points(model, processor, tokenizer, frames_list, queries, batch_size: int = 16,
                   max_new_tokens: int | None = None) -> list[tuple[np.ndarray, str]]:
    """Greedy point text and parsed pixel points for (frames, query) pairs; `frames[-1]` is
    the frame pointed at, the rest its context."""
    import torch

    from videomolmo.model import collate
    from videomolmo.points import parse_points

    out = []
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(queries), batch_size):
            exs = [processor(f[-1], list(f[:-1]), q) for f, q in
                   zip(frames_list[s:s + batch_size], queries[s:s + batch_size])]
            batch = collate(exs, tokenizer.pad_token_id, padding_side="left")
            with torch.no_grad():
                gen = model.generate(batch, max_new_tokens=max_new_tokens,
                                     eos_token_id=tokenizer.eos_token_id)
            for f, ids in zip(frames_list[s:s + batch_size], gen):
                text = tokenizer.decode(ids)
                h, w = f[-1].shape[:2]
                out.append((parse_points(text, w, h), text))
    finally:
        model.train(was_training)
    return out


def score_items(items: list[HeldOutItem], preds: list[np.ndarray]) -> dict:
    """Per-kind and overall point P/R/F1 (micro over items), hit rate of single-object
    queries, and counting MAE / exact match on `count` queries."""
    from videomolmo.metrics import count_accuracy, count_mae, point_prf

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


def evaluate_model(model, processor, tokenizer, items: list[HeldOutItem], batch_size: int = 16,
                   max_new_tokens: int | None = None) -> dict:
    """Decode and score held-out items (see `score_items`)."""
    l = processor.config.context_frames
    frames = [[it.clip.frames[i] for i in range(max(0, it.t - l), it.t + 1)] for it in items]
    queries = [it.clip.expressions[it.expression].text for it in items]
    preds = predict_points(model, processor, tokenizer, frames, queries, batch_size, max_new_tokens)
    return score_items(items, [p for p, _ in preds])
