"""`videomolmo demo`: the whole job on a fresh CPU machine, no downloads.

Generates a synthetic clip with a motion-only query (two identical sprites that differ only in
how they move) and a counting query, runs the bundled model (stage 1: points on every frame
with its temporal module), the CPU mask backend with bidirectional fusion (stage 2), writes
per query `points.jsonl`, `count.json`, `masks/<frame>.png` and `overlay.mp4` (points as
stars, masks tinted, GT outlined), and scores everything against the clip's ground truth:
point P/R/F1 (Molmo protocol), count, J / F / J&F.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from videomolmo.files import atomic_write_json, ensure_writable_dir
from videomolmo.masks import read_mask
from videomolmo.metrics import j_and_f, point_prf
from videomolmo.pipeline import Pipeline
from videomolmo.settings import DEFAULTS
from videomolmo.synth import Clip, SynthConfig, clip_rng, generate_clip

DEMO_SEED = 2024
#: The demo points on every frame of its 12-frame clip (k=1); everything else is the paper's.
DEMO_SETTINGS = replace(DEFAULTS, k=1)


@dataclass
class QueryReport:
    query: str
    kind: str
    points: dict[int, list[list[float]]]
    count: int
    gt_count: int
    point_f1: float
    j: float
    f: float
    jf: float
    files: dict[str, str] = field(default_factory=dict)


def demo_clip(seed: int = DEMO_SEED, frames: int = 12, size: int = 112) -> tuple[Clip, list[int]]:
    """The first clip of the demo seed stream that has both a motion-only and a counting
    query whose objects stay visible; returns it and the indices of those two expressions."""
    cfg = SynthConfig(size=size, frames=frames, min_sprites=3, max_sprites=5, motion_group_prob=1.0,
                      enter_leave_prob=0.0, kind_weights=(0.0, 1.0, 0.0, 1.0, 0.0))
    for i in range(1000):
        clip = generate_clip(clip_rng(seed, "test", i), cfg)
        kinds = {e.kind: j for j, e in enumerate(clip.expressions)}
        if "motion" in kinds and "count" in kinds:
            idx = [kinds["motion"], kinds["count"]]
            if all(clip.points[k][t] is not None for j in idx for k in clip.expressions[j].obj_ids
                   for t in range(frames)) and len(clip.expressions[kinds["count"]].obj_ids) >= 2:
                return clip, idx
    raise RuntimeError("no demo clip found")  # pragma: no cover - the seed stream is fixed


def score_query(clip: Clip, expr: int, points: dict[int, np.ndarray],
                masks: dict[int, np.ndarray]) -> dict:
    """Point F1 (mean over frames), video count (max distinct points) and J / F / J&F."""
    e = clip.expressions[expr]
    f1s = []
    for t, p in points.items():
        vis = [k for k in e.obj_ids if clip.points[k][t] is not None]
        f1s.append(point_prf(p, clip.target_points(vis, t), [clip.masks[k, t] for k in vis]).f1)
    T = clip.frames.shape[0]
    gt = np.stack([clip.union_mask(e.obj_ids, t) for t in range(T)])
    pred = np.stack([masks[t] for t in range(T)])
    j, f, jf = j_and_f(gt, pred)
    return {"point_f1": float(np.mean(f1s)), "j": float(np.mean(j)), "f": float(np.mean(f)),
            "jf": float(np.mean(jf))}


def run_demo(out: str | Path = "videomolmo-demo", seed: int = DEMO_SEED, k: int = DEMO_SETTINGS.k,
             tau: float = DEMO_SETTINGS.tau, progress=None) -> list[QueryReport]:
    """Run the demo; returns one report per query and writes `<out>/summary.json`.

    `progress(stage, done, total)` hears about loading, pointing and masks of each query."""
    t0 = time.perf_counter()
    out = ensure_writable_dir(out)
    clip, exprs = demo_clip(seed)
    report = progress or (lambda stage, done, total: None)
    report("loading the bundled model", 0, 1)
    pipe = Pipeline.from_pretrained(None)
    pipe.synthetic_input = True  # the bundled model's own domain: no out-of-domain notice
    report("loading the bundled model", 1, 1)
    reports = []
    frames = clip.frames
    for j in exprs:
        e = clip.expressions[j]
        qdir = out / f"{e.kind}"
        def stage(name, done, total, kind=e.kind):
            report(f"{kind} query: {name}", done, total)

        res = pipe(frames, e.text, k=k, tau=tau, mask_backend=DEMO_SETTINGS.mask_backend,
                   fusion=DEMO_SETTINGS.fusion, progress=stage)
        files = res.save(qdir, progress=stage, sheet=True,
                         gt_mask=lambda t, ids=e.obj_ids: clip.union_mask(ids, t))

        # Score exactly what was written (the mask PNGs), not a second run of the mask stage.
        masks = {}
        for t in range(len(frames)):
            masks[t] = read_mask(qdir / "masks" / f"{t:05d}.png")
        scores = score_query(clip, j, res.points, masks)
        gt_count = len(e.obj_ids)
        rep = QueryReport(query=e.text, kind=e.kind,
                          points={int(t): np.round(p, 1).tolist() for t, p in res.points.items()},
                          count=int(res.count), gt_count=gt_count, files=files, **scores)
        reports.append(rep)
    summary = {"seed": seed, "frames": int(len(frames)), "size": int(frames.shape[1]),
               "seconds": round(time.perf_counter() - t0, 2),
               "queries": [rep.__dict__ for rep in reports]}
    atomic_write_json(out / "summary.json", summary, indent=1)
    return reports
