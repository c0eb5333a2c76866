"""Where a model's count goes wrong, on the counting queries of the synthetic val stream.

1. By the true count: exact / too few / too many.
2. By the smallest visible area among the target sprites at the frame pointed at (are the
   missed sprites the barely visible ones?).
3. The count decisions (`training/count_decisions.py`): teacher-forced on the model's own
   greedy answer, p(one more point) at the character where an under-counting answer stopped
   (`s` after `<point`, `x` after the last `yN="..." `). Near 0.5 a decoding bias could flip
   it; far below, the model does not see the missing sprite.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diag_count.py [--model DIR] [--clips 500]

Counts here are the text's own (`--point-decode text`): the question is what the text decides.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from videomolmo.training.count_decisions import decision_offsets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="model folder, or 'bundled'")
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    a = ap.parse_args()
    torch.set_num_threads(1)

    from videomolmo.model import collate
    from videomolmo.pointers.model import load_model
    from videomolmo.points import parse_points_percent
    from videomolmo.training.heldout import heldout_items, item_frames, predict_points

    model, proc = load_model(None if a.model == "bundled" else a.model)
    tok, cfg = proc.tokenizer, model.config
    items = [it for it in heldout_items(a.clips, seed=0, split=a.split, preset="eval", context=cfg.context_frames,
                                        size=cfg.clip_size) if it.kind == "count"]
    frames = item_frames(items, cfg.context_frames, "normal")
    queries = [it.clip.expressions[it.expression].text for it in items]
    answers = predict_points(model, proc, tok, frames, queries, point_decode="text")
    model.eval()
    rows = []  # (true count, text count, smallest visible area, p(one more) at the stop)
    for it, f, q, (_, text) in zip(items, frames, queries, answers):
        e = it.clip.expressions[it.expression]
        vis = [k for k in e.obj_ids if it.clip.points[k][it.t] is not None]
        n_gt, n_text = len(vis), len(parse_points_percent(text))
        area = min((int(it.clip.masks[k, it.t].sum()) for k in vis), default=None)
        p_stop = None
        if 0 < n_text < n_gt:
            p_stop = _p_more_at_stop(model, proc, tok, f, q, text, collate)
        rows.append((n_gt, n_text, area, p_stop))

    print(f"{len(rows)} counting queries of {a.clips} `eval` clips, {a.split} stream")
    print("| true count | n | exact | too few | too many |\n|---|---|---|---|---|")
    for n in sorted({r[0] for r in rows}):
        sel = [r for r in rows if r[0] == n]
        print(f"| {n} | {len(sel)} | {_share(sel, lambda r: r[1] == r[0])} | {_share(sel, lambda r: r[1] < r[0])} "
              f"| {_share(sel, lambda r: r[1] > r[0])} |")
    print("\n| smallest visible target (px) | n | too few |\n|---|---|---|")
    for lo, hi in ((0, 60), (60, 120), (120, 10**9)):
        sel = [r for r in rows if r[2] is not None and lo <= r[2] < hi]
        print(f"| {lo}-{'' if hi == 10**9 else hi} | {len(sel)} | {_share(sel, lambda r: r[1] < r[0])} |")
    ps = [r[3] for r in rows if r[3] is not None]
    if ps:
        print(f"\np(one more point) where the text stopped too early (n = {len(ps)}): min {min(ps):.3f}, "
              f"median {statistics.median(ps):.3f}, max {max(ps):.3f}; >= 0.3: {sum(p >= 0.3 for p in ps)}")


def _share(rows, pred) -> str:
    return f"{sum(map(pred, rows)) / len(rows):.2f}" if rows else "-"


def _p_more_at_stop(model, proc, tok, frames, query, text, collate) -> float:
    """p(one more point) at the answer's last count decision, teacher-forced on `text`."""
    ex = proc(frames[-1], list(frames[:-1]), query)
    batch = collate([ex], tok.pad_token_id, padding_side="left")
    ids = torch.tensor([tok.encode(text)])
    batch.pop("labels", None)
    batch["input_ids"] = torch.cat([batch["input_ids"], ids], 1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    with torch.no_grad():
        probs = model(**batch).logits[0].float().softmax(-1)
    start = batch["input_ids"].shape[1] - ids.shape[1]
    # The answer's last count decision is where it stopped: a space after `<point` (one point;
    # "more" is `s`) or the closing `a` of `alt` after the last `yN` ("more" is `x`).
    stop = decision_offsets(text)[-1]
    more = tok.encode("s" if text[stop] == " " else "x")[0]
    # The logit at position i predicts token i + 1 (one byte token per character here).
    return float(probs[start + stop - 1, more])


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
