"""How to read points out of a model with a patch-selection head, chosen on the val stream.

Decodes every expression of `--clips` synthetic clips of the `--split` seed stream once (text
and the head's coverage from the same forward pass) and scores, per expression kind:
- `text`: the coordinate digits;
- `patch`: the text's count, placed by the head's selection (`model/point_head.py`);
- `patch-count`: one point per selected group;
- `patch, none if max coverage < t`: `patch`, but "none" when no patch reaches coverage t (does
  the head's own evidence of absence help?), for each t in `--thresholds`;
- `patch + extra groups >= t`: `patch`, plus every further group selected at coverage t that
  lies more than a patch from the placed points (does the head find objects the text missed?),
  for each t in `--extra-thresholds`.

`--rows DIR` writes each rule's per-expression rows to `DIR/<rule>/rows.jsonl` (the layout of
`videomolmo eval`), so two rules pair with `videomolmo eval-compare DIR/patch DIR/<rule>`.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_point_decode.py --split val --clips 500 [--rows DIR]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="model folder, or 'bundled'")
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--preset", default="eval")
    ap.add_argument("--thresholds", default="0.1,0.2,0.3,0.5")
    ap.add_argument("--extra-thresholds", default="0.5,0.7,0.9")
    ap.add_argument("--rows", default=None, help="folder for each rule's rows.jsonl")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from videomolmo.model import collate
    from videomolmo.model.point_head import patch_points, read_points
    from videomolmo.points import parse_points
    from videomolmo.pointers.model import load_model
    from videomolmo.training.heldout import heldout_items, item_frames, item_rows, score_items

    model, proc = load_model(None if a.model == "bundled" else a.model)
    if model.point_head is None:
        raise SystemExit(f"{a.model}: the model has no patch-selection head")
    tok, cfg = proc.tokenizer, model.config
    items = heldout_items(a.clips, seed=0, split=a.split, preset=a.preset, context=cfg.context_frames,
                          size=cfg.clip_size)
    frames = item_frames(items, cfg.context_frames, "normal")
    queries = [it.clip.expressions[it.expression].text for it in items]
    decoded = []  # (text points, coverage, frame size)
    model.eval()
    for s in range(0, len(items), 16):
        exs = [proc(f[-1], list(f[:-1]), q) for f, q in zip(frames[s:s + 16], queries[s:s + 16])]
        batch = collate(exs, tok.pad_token_id, padding_side="left")
        with torch.no_grad():
            gen, cov = model.generate(batch, eos_token_id=tok.eos_token_id, return_coverage=True)
        for r, (f, ids) in enumerate(zip(frames[s:s + 16], gen)):
            h, w = f[-1].shape[:2]
            decoded.append((parse_points(tok.decode(ids), w, h), cov[r].numpy(), (h, w)))

    rules = {m: (lambda tp, c, hw, m=m: read_points(m, tp, c, hw, cfg)) for m in ("text", "patch", "patch-count")}
    for t in (float(x) for x in a.thresholds.split(",")):
        rules[f"patch, none if max coverage < {t:g}"] = (
            lambda tp, c, hw, t=t: read_points("patch", tp, c, hw, cfg) if c.max() >= t else np.zeros((0, 2)))
    for t in (float(x) for x in a.extra_thresholds.split(",")):
        rules[f"patch + extra groups >= {t:g}"] = (
            lambda tp, c, hw, t=t: patch_points(c, tp, hw, cfg.vision.image_size, cfg.vision.patch_size,
                                                extra_threshold=t))
    kinds = sorted({it.kind for it in items})
    print(f"{len(items)} expressions of {a.clips} `{a.preset}` clips, {a.split} stream; point F1 per kind")
    print("| decode | all | " + " | ".join(kinds) + " | count exact |")
    print("|---|---|" + "---|" * len(kinds) + "---|")
    for name, rule in rules.items():
        preds = [rule(tp, c, hw) for tp, c, hw in decoded]
        sc = score_items(items, preds)
        if a.rows:
            write_rows(Path(a.rows) / slug(name), item_rows(items, preds))
        per = " | ".join(f"{sc[k]['f1']:.3f}" for k in kinds)
        print(f"| {name} | {sc['f1']:.3f} | {per} | {sc.get('count', {}).get('exact', float('nan')):.3f} |")


def slug(rule: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", rule.lower()).strip("-")


def write_rows(run: Path, rows: list[dict]) -> None:
    from videomolmo.files import atomic_write_text

    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
