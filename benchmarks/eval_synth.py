"""Held-out metrics of a VideoMolmo model on the synthetic test split.

    .venv/bin/python benchmarks/eval_synth.py                        # the bundled model
    .venv/bin/python benchmarks/eval_synth.py --model runs/x/final   # any save_pretrained folder
    .venv/bin/python benchmarks/eval_synth.py --model A --model B    # several (the Table-6 ablation)

Stage 1 (pointing) on every expression of `--clips` test clips at frame l (full context):
point precision / recall / F1 per expression kind (Molmo protocol, `metrics.point_prf`),
counting MAE and exact match. Stage 2 on `--mask-clips` longer clips: every frame pointed,
CPU mask backend, bidirectional fusion, J / F / J&F against the synthetic GT masks.
`--no-temporal` also scores each model with its temporal module switched off.
`--context repeat|shuffle|none` is the inference-time context ablation (`heldout.item_frames`).
`--out DIR` writes, per model (and context), a run folder `DIR/<name>/` with `rows.jsonl` and
`summary.json` (bootstrap CIs) in `videomolmo eval`'s layout, so two of them compare paired:
`videomolmo eval-compare DIR/a DIR/b`.
Prints a JSON object per model and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def load(model_arg: str | None):
    if model_arg in (None, "bundled"):
        from videomolmo.bundled import load_default

        return load_default()
    from videomolmo.model import Processor, build_tokenizer
    from videomolmo.model.checkpoint import from_pretrained

    model = from_pretrained(model_arg).eval()
    return model, Processor(model.config, build_tokenizer(model.config))


def mask_stage(model, processor, n_clips: int, seed: int, frames: int, k: int, tau: float,
               rows: list | None = None, point_decode: str | None = None) -> dict:
    """J / F / J&F after bidirectional fusion on every expression of `n_clips` test clips;
    per-expression rows (key, expression, category, JF) are appended to `rows` when given."""
    from videomolmo.metrics import j_and_f
    from videomolmo.pipeline import Pipeline, PipelineConfig
    from videomolmo.pointers.model import ModelPointer
    from videomolmo.synth import SynthConfig, clip_rng, generate_clip

    pipe = Pipeline(ModelPointer(model, processor, batch_size=8, point_decode=point_decode), PipelineConfig(k=k, tau=tau))
    cfg = SynthConfig.from_name("eval", frames=frames)
    per_kind: dict[str, list] = {}
    for i in range(n_clips):
        clip = generate_clip(clip_rng(seed, "test", 10_000 + i), cfg)
        for jx, e in enumerate(clip.expressions):
            res = pipe(clip.frames, e.text, mask_backend="cpu", fusion="bidirectional")
            pred = np.stack([m for _, m in res.masks()])
            gt = np.stack([clip.union_mask(e.obj_ids, t) for t in range(frames)])
            j, f, jf = j_and_f(gt, pred)
            per_kind.setdefault(e.kind, []).append((float(np.mean(j)), float(np.mean(f)), float(np.mean(jf))))
            if rows is not None:
                rows.append({"key": f"{i}/{jx}", "expression": e.text, "category": e.kind,
                             "J": float(np.mean(j)), "F": float(np.mean(f)), "JF": float(np.mean(jf))})
    out = {}
    for kind, rows in sorted(per_kind.items()):
        a = np.asarray(rows)
        out[kind] = {"n": len(rows), "J": float(a[:, 0].mean()), "F": float(a[:, 1].mean()), "J&F": float(a[:, 2].mean())}
    allr = np.asarray([r for rows in per_kind.values() for r in rows])
    out["all"] = {"n": len(allr), "J": float(allr[:, 0].mean()), "F": float(allr[:, 1].mean()),
                  "J&F": float(allr[:, 2].mean())}
    return out


def write_run(folder: Path, rows: list, info: dict) -> None:
    """A run folder in `videomolmo eval`'s layout: rows.jsonl, summary.json / .md, info.json."""
    from videomolmo.evaluation import summary
    from videomolmo.files import JsonlLog, atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.glob("rows*.jsonl"):
        p.unlink()
    JsonlLog(folder / "rows.jsonl").append(rows)
    summ = summary.summarize("synthetic", rows)
    atomic_write_text(folder / "summary.json", summary.dumps(summ))
    atomic_write_text(folder / "summary.md", summary.to_markdown(summ))
    atomic_write_text(folder / "info.json", json.dumps(info, indent=1) + "\n")


def main() -> None:
    from videomolmo.model.point_head import POINT_DECODES, resolve_point_decode

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model folder, or 'bundled' (default)")
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--mask-clips", type=int, default=6)
    ap.add_argument("--mask-frames", type=int, default=12)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--tau", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="eval", help="synthetic preset of the test clips (eval | motion)")
    ap.add_argument("--no-temporal", action="store_true", help="also score with the temporal module off")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--context", action="append", choices=["normal", "repeat", "shuffle", "none"],
                    help="context ablation(s) to score (repeatable; default normal)")
    ap.add_argument("--out", type=Path, help="write per-model run folders (rows.jsonl, summary.json) here")
    ap.add_argument("--name", action="append", help="run-folder name per --model (default: derived)")
    ap.add_argument("--point-decode", choices=list(POINT_DECODES),
                    help="read points from the text or the patch-selection head (default: the model's own way)")
    ap.add_argument("--split", default="test", choices=["val", "test"],
                    help="seed stream of the pointing clips: choose settings on val, report test once")
    ap.add_argument("--kinds", help="score only these expression kinds (comma-separated, e.g. motion)")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from videomolmo.training.heldout import evaluate_model, heldout_items

    results = {}
    models = a.model or ["bundled"]
    names = a.name or [Path(m).name if m != "bundled" else "bundled" for m in models]
    if len(names) != len(models):
        raise SystemExit("give one --name per --model")
    for m, name in zip(models, names):
        model, proc = load(m)
        # Resolved once, used and recorded: a default read-out can change between runs that
        # eval-compare pairs.
        decode = resolve_point_decode(a.point_decode, model.config)
        items = heldout_items(a.clips, seed=a.seed, split=a.split, preset=a.preset,
                              context=model.config.context_frames, size=model.config.clip_size)
        if a.kinds:
            items = [it for it in items if it.kind in a.kinds.split(",")]
        t0 = time.perf_counter()
        res = {}
        for ctx in a.context or ["normal"]:
            rows: list = []
            key = "pointing" if ctx == "normal" else f"pointing_context_{ctx}"
            res[key] = evaluate_model(model, proc, proc.tokenizer, items, context=ctx, rows=rows,
                                      point_decode=decode)
            if a.out:
                write_run(a.out / (name if ctx == "normal" else f"{name}-{ctx}"), rows,
                          {"model": m, "context": ctx, "preset": a.preset, "clips": a.clips, "seed": a.seed, "split": a.split,
                           "point_decode": decode})
        res["pointing_s"] = round(time.perf_counter() - t0, 1)
        if a.no_temporal and model.config.temporal != "none":
            # Same weights, temporal module off: the paper's single-frame comparison.
            res["pointing_no_temporal"] = evaluate_model(model, proc, proc.tokenizer, items, context="none",
                                                         point_decode=decode)
        if a.mask_clips > 0:
            t0 = time.perf_counter()
            mrows: list = []
            res["masks"] = mask_stage(model, proc, a.mask_clips, a.seed, a.mask_frames, a.k, a.tau, mrows,
                                     point_decode=decode)
            if a.out:
                write_run(a.out / f"{name}-masks", mrows, {"model": m, "mask_clips": a.mask_clips, "seed": a.seed,
                                                          "point_decode": decode})
            res["masks_s"] = round(time.perf_counter() - t0, 1)
        results[m] = res
        print(json.dumps({m: res}), flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    print()
    print("| model | kind | n | P | R | F1 |")
    print("|---|---|---|---|---|---|")
    for m, res in results.items():
        main_key = "pointing" if "pointing" in res else next(k for k in res if k.startswith("pointing_context"))
        for kind, v in res[main_key].items():
            if isinstance(v, dict):
                print(f"| {m} | {kind} | {v['n']} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |")
        c = res[main_key].get("count")
        if c and "mae" in c:
            print(f"| {m} | counting | {c['n']} | MAE {c['mae']:.2f} | exact {c['exact']:.3f} | |")
        if "masks" in res:
            for kind, v in res["masks"].items():
                print(f"| {m} | masks: {kind} | {v['n']} | J {v['J']:.3f} | F {v['F']:.3f} | J&F {v['J&F']:.3f} |")


if __name__ == "__main__":
    main()
