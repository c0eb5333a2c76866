"""Which synthetic queries need shape (or motion), and how a run scores on them.

    .venv/bin/python benchmarks/shape_dependence.py RUN_FOLDER [--split test|val] [--clips 500] [--preset eval]

RUN_FOLDER is an `eval_synth.py --out` run folder (its rows.jsonl, keys `clip/expression`) scored
on the same held-out clips (`--split`, `--clips`, `--preset` as that run). Splits each
appearance and absent query by whether its colour alone decides the answer (appearance: one
visible sprite of that colour; absent: no sprite of that colour) or the shape is needed too,
and prints point F1 per group; for counting queries (all of the form "how many <shape>s are
there?") it prints the exact-match rate of answering a constant count, the baseline a model
blind to shape can reach; for motion-only queries it prints point F1 next to what picking one
of the target's look-alikes (same colour and shape, visible) at random would score, the baseline
a model blind to motion can reach (run it on a `--preset motion` run for many of them).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--clips", type=int, default=500)
    ap.add_argument("--preset", default="eval")
    args = ap.parse_args(argv)
    rows_file = args.run / "rows.jsonl"
    if not rows_file.is_file():
        print(f"{rows_file} not found: give an eval_synth.py --out run folder", file=sys.stderr)
        return 1
    from videomolmo.training.heldout import heldout_items

    rows = {r["key"]: r for r in map(json.loads, rows_file.read_text().splitlines()) if "key" in r}
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts: list[tuple[int, int]] = []
    motion: list[tuple[float, float]] = []
    for it in heldout_items(args.clips, split=args.split, preset=args.preset):
        r = rows.get(f"{it.clip_index}/{it.expression}")
        e = it.clip.expressions[it.expression]
        if r is None:
            continue
        if e.kind == "count":
            counts.append((int(r["count_gt"]), int(r["count"])))
            continue
        visible = [s for k, s in enumerate(it.clip.sprites) if it.clip.masks[k, it.t].any()]
        if e.kind == "motion":
            target = it.clip.sprites[e.obj_ids[0]]
            alike = sum((s.colour, s.shape) == (target.colour, target.shape) for s in visible)
            motion.append((float(r["F1"]), 1.0 / max(1, alike)))
            continue
        if e.kind not in ("appearance", "absent"):
            continue
        colour = e.text.split()[1]  # "the <colour> <shape>"
        same = sum(s.colour == colour for s in visible)
        by_colour = same == (1 if e.kind == "appearance" else 0)
        groups[(e.kind, "colour decides" if by_colour else "needs shape")].append(float(r["F1"]))
    if not groups and not counts and not motion:
        print("no rows of this run match these clips: check --split / --clips / --preset", file=sys.stderr)
        return 1
    print(f"{args.run} ({args.split} split, {args.clips} `{args.preset}` clips)")
    print("| kind | query | n | point F1 |\n|---|---|---|---|")
    for (kind, need), f1 in sorted(groups.items()):
        print(f"| {kind} | {need} | {len(f1)} | {np.mean(f1):.3f} |")
    if counts:
        gt = np.array([g for g, _ in counts])
        pred = np.array([p for _, p in counts])
        const = ", ".join(f"{c}: {np.mean(gt == c):.3f}" for c in range(5))
        print(f"counting (n={len(counts)}): exact match {np.mean(gt == pred):.3f}; "
              f"a constant answer would score {const}")
    if motion:
        f1, guess = np.array(motion).T
        print(f"motion-only (n={len(motion)}): point F1 {f1.mean():.3f}; one look-alike at random "
              f"{guess.mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
