"""Mask stage on davis16-mini: J, F and J&F of the CPU backend for every fusion strategy, anchor
spacing k and fusion threshold tau (the paper's Tables 5, 9 and 10), plus a disk baseline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mask_stage.py \
        --out benchmarks/results/mask_stage.json [--points peak|annotate|file] [--seqs a,b] \
        [--set motion_thresholds=[0.5,0.8]]

Points at anchor frames come from the ground-truth masks: `peak` = the distance-transform peak
(the deepest point inside the mask), `annotate` = the annotation pipeline's best-of-n click
(`videomolmo.annotation.best_point`, n = --candidates, seed 0, clicks segmented on the video with
`predict_frame` as `videomolmo annotate` does), `file` = the clicks of a full
annotation-pipeline run read from --points-file (default runs/davis16-mini-points.jsonl, k=10
candidates on every frame). No prediction ever sees a mask. `--set KEY=VALUE` overrides a
`CpuConfig` field (for ablations; recorded in the result file's settings).

Cost control (2 shared cores): each anchor's mask is computed once per sequence and reused by
every k (a cache in front of the backend's `add_points`), and each k's forward / backward
propagations are computed once and scored under every strategy and tau. Per-frame scores of
identical masks are computed once. Results are written atomically after each sequence and a
rerun skips sequences already in the output (so a killed run resumes).

Timing: the k=5 bidirectional pass of each sequence runs first with an empty cache and is timed
(wall and this process's CPU time), so s/frame is the full cost of the mask stage at k=5.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "davis16-mini"
# Held out from every tuning decision of the CPU backend (chosen before tuning started).
HELD_OUT = ("dog", "kite-surf")
KS = (1, 3, 5, 10, 20)
TAUS = (0.0, 0.3, 0.5, 0.7, 0.9)
DISK_RADII = (15, 30, 60)
PAIRED = tuple(f"k=5 {s} tau=0.7" for s in ("bidirectional", "forward", "nearest", "confidence"))
# `--ks 1,5`: every frame is an anchor, segmented from its own click with no propagation -- what
# the mask stage would score if propagation and fusion were exactly as good as point -> mask.
EVERY_FRAME = "k=1 bidirectional tau=0.7"
BOOT = 2000


def peak_point(mask: np.ndarray) -> np.ndarray | None:
    if not mask.any():
        return None
    dt = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(dt), dt.shape)
    return np.array([[float(x), float(y)]])


def read_points_file(path: Path, seq: str) -> dict[int, list[float]]:
    """{frame index: [x, y]} for `seq` from an annotation-pipeline JSONL
    (`videomolmo annotate` rows `{video, exp_id, obj_id, frame_index, point, ...}`).

    davis16-mini has one object per sequence; its expressions' rows share the frame's click
    source, so the first row of each frame is used.
    """
    points: dict[int, list[float]] = {}
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row["video"] == seq and row.get("point") is not None:
                    points.setdefault(int(row["frame_index"]), [float(v) for v in row["point"]])
            except (ValueError, KeyError, TypeError) as e:
                raise SystemExit(f"{path}:{i}: not a points row ({e})")
    return points


def make_caching(predictor):
    """Wrap a CpuPredictor so that an anchor's prompt is segmented once per sequence."""
    cache: dict = {}
    orig = predictor.add_points

    def add_points(state, frame_idx, obj_id, points, labels=None):
        key = (frame_idx, obj_id, np.asarray(points, float).tobytes(),
               None if labels is None else np.asarray(labels).tobytes())
        if key not in cache:
            full = orig(state, frame_idx, obj_id, points, labels)
            cache[key] = (full, state.prompts[frame_idx][obj_id], state.masks[frame_idx][obj_id],
                          state.scores.get(frame_idx, {}).get(obj_id),
                          state.extra.get("appearance", {}).get(obj_id),
                          state.extra.get("small_masks", {}).get(frame_idx, {}).get(obj_id))
            return full
        full, prompt, mask, score, appearance, small = cache[key]
        state.prompts.setdefault(frame_idx, {})[obj_id] = prompt
        state.masks.setdefault(frame_idx, {})[obj_id] = mask
        if small is not None:
            # The backend's walk starts from its working-size mask: without it a cached anchor
            # propagates nothing (k != 5 rows would score empty masks).
            state.extra.setdefault("small_masks", {}).setdefault(frame_idx, {})[obj_id] = small
        if score is not None:
            state.scores.setdefault(frame_idx, {})[obj_id] = score
        state.extra.setdefault("appearance", {})[obj_id] = appearance
        return full

    predictor.add_points = add_points
    return cache


class Scorer:
    """J and F per (frame, mask), memoised by the mask's bytes."""

    def __init__(self, gts: list[np.ndarray]):
        from videomolmo.metrics import boundary_f, jaccard

        self.gts, self._j, self._f = gts, jaccard, boundary_f
        self.memo: dict = {}

    def __call__(self, t: int, mask: np.ndarray) -> tuple[float, float]:
        key = (t, hashlib.sha1(np.packbits(mask).tobytes()).hexdigest())
        if key not in self.memo:
            gt = self.gts[t]
            self.memo[key] = (float(self._j(gt, mask)), float(self._f(gt, mask)))
        return self.memo[key]


def run_sequence(seq: str, args, predictor_factory) -> dict:
    from videomolmo.masks import foreground
    from videomolmo.segmentation.propagation import fuse_segment, iter_segments
    from videomolmo.video import open_video

    video = open_video(DATA / "JPEGImages" / seq)
    frames = [video[i] for i in range(len(video))]
    names = video.frame_names
    gts = [foreground(DATA / "Annotations" / seq / f"{n}.png") for n in names]
    n = len(frames)
    scorer = Scorer(gts)

    predictor = predictor_factory()
    if args.points == "peak":
        points = {t: peak_point(gts[t]) for t in range(n)}
    elif args.points == "file":
        points = {t: np.asarray(p, float)[None] for t, p in read_points_file(args.points_file, seq).items()}
    else:
        from videomolmo.annotation import best_point, unit_rng

        points = {}
        # Only anchor frames need points (annotation runs the backend `candidates` times each).
        # As `videomolmo annotate` does: clicks segmented on the open video (the motion cue).
        ann_state = predictor.init_state(frames)
        for t in sorted({t for k in args.ks for t in range(0, n, k)}):
            p, _, _ = best_point(frames[t], gts[t], predictor, args.candidates, unit_rng(0, seq, "1", names[t]),
                                 segment=lambda pts, t=t: predictor.predict_frame(ann_state, t, pts))
            points[t] = None if p is None else np.asarray(p, float)[None]
    points = {t: p for t, p in points.items() if p is not None}

    if args.oracle_anchors:
        # Diagnostic: the anchors get the ground-truth mask instead of the backend's point ->
        # mask, so only propagation and fusion are measured (what a perfect point -> mask
        # step, e.g. a strong SAM2, would give the fusion rule to work with).
        import cv2

        def oracle_add_points(state, frame_idx, obj_id, pts, labels=None):
            gt = gts[frame_idx]
            small = predictor._small(frames[frame_idx])[0]
            sm = cv2.resize(gt.astype(np.uint8), (small.shape[1], small.shape[0]),
                            interpolation=cv2.INTER_NEAREST) > 0
            state.prompts.setdefault(frame_idx, {})[obj_id] = (np.asarray(pts, float), np.ones(len(pts), int))
            state.masks.setdefault(frame_idx, {})[obj_id] = sm
            state.extra.setdefault("small_masks", {}).setdefault(frame_idx, {})[obj_id] = sm
            state.extra.setdefault("appearance", {})[obj_id] = predictor._appearance(small, sm)
            return gt.copy()

        predictor.add_points = oracle_add_points
    cache = make_caching(predictor)
    scores: dict[str, list[tuple[float, float]]] = {}

    def add(name: str, t: int, mask: np.ndarray) -> None:
        scores.setdefault(name, []).append(scorer(t, mask))

    from videomolmo.fusion import fuse, mask_iou, strategy_names

    diag: list[dict] = []

    timing = {}
    for k in (5,) + tuple(x for x in args.ks if x != 5):
        if k not in args.ks and k != 5:
            continue
        wall0, cpu0 = time.perf_counter(), time.process_time()
        segs = []
        anchor_points = {t: p for t, p in points.items() if t % k == 0}
        for seg in iter_segments(frames, anchor_points, predictor, k=k):
            segs.append(seg)
        if k == 5:
            timing = {
                "wall_s_per_frame": (time.perf_counter() - wall0) / n,
                "cpu_s_per_frame": (time.process_time() - cpu0) / n,
                "anchor_masks": len(cache),
            }
        for seg in segs:
            strategies = strategy_names() if k == 5 else ("bidirectional", "forward", "nearest")
            for s in strategies:
                for t, m in fuse_segment(seg, s, 0.7):
                    add(f"k={k} {s} tau=0.7", t, m)
            if k == 5 and seg.backward is not None:
                # Why does a strategy win? Per in-between frame: which branch of `fuse` fired
                # and how good each side was.
                for j, (f, b) in enumerate(zip(seg.forward, seg.backward)):
                    t = seg.start + 1 + j
                    branch = "one side empty" if not (f.any() and b.any()) else (
                        "intersection" if mask_iou(f, b) >= 0.7 else "union")
                    near = f if (t - seg.start) <= (seg.end - t) else b
                    fused = fuse(f, b, 0.7) if f.any() or b.any() else f
                    diag.append({"branch": branch, "J_forward": scorer(t, f)[0], "J_backward": scorer(t, b)[0],
                                 "J_fused": scorer(t, fused)[0],
                                 "J_nearest": scorer(t, near)[0], "iou_sides": mask_iou(f, b),
                                 # Do the sides lose parts (recall) or spill (precision), and how
                                 # fast with the distance from their anchor?
                                 "steps_forward": t - seg.start, "steps_backward": seg.end - t,
                                 **{f"{x}_{name}": v for name, m in (("forward", f), ("backward", b), ("fused", fused))
                                    for x, v in zip(("P", "R"), precision_recall(gts[t], m))}})
            if k == 5:
                for tau in TAUS:
                    if tau == 0.7:
                        continue  # scored above as "k=5 bidirectional tau=0.7"
                    for t, m in fuse_segment(seg, "bidirectional", tau):
                        add(f"k=5 bidirectional tau={tau}", t, m)
        del segs

    # Trivial baseline: a disk around the anchor's point, held until the nearer next anchor.
    h, w = gts[0].shape
    yy, xx = np.mgrid[0:h, 0:w]
    for r in DISK_RADII:
        for k in sorted({1, 5} & set(args.ks)):
            anchors = list(range(0, n, k))
            for t in range(n):
                a = min(anchors, key=lambda a: (abs(a - t), a))
                p = points.get(a)
                m = np.zeros((h, w), bool) if p is None else (xx - p[0, 0]) ** 2 + (yy - p[0, 1]) ** 2 <= r * r
                add(f"k={k} disk r={r}px", t, m)

    return {
        "frames": n,
        "timing": timing,
        "fusion_diagnostics": diag,
        # Per-frame (J + F) / 2 of the k=5 strategies compared in the text, for paired bootstraps.
        "per_frame_jf": {name: [round((j + f) / 2, 5) for j, f in scores[name]]
                         for name in PAIRED + (EVERY_FRAME,) if name in scores},
        "scores": {
            name: {"J": float(np.mean([j for j, _ in v])), "F": float(np.mean([f for _, f in v]))}
            for name, v in scores.items()
        },
    }


def precision_recall(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Pixel precision and recall of `pred` against `gt` (1.0 where the denominator is empty)."""
    tp = float((gt & pred).sum())
    return (tp / pred.sum() if pred.any() else 1.0, tp / gt.sum() if gt.any() else 1.0)


def side_profile(diag: list[dict]) -> dict:
    """Mean precision / recall of each propagated side by its distance (frames) from its anchor."""
    out = {}
    for side in ("forward", "backward"):
        for d in sorted({x[f"steps_{side}"] for x in diag if f"steps_{side}" in x}):
            ds = [x for x in diag if x.get(f"steps_{side}") == d]
            out[f"{side} +{d}"] = {"n": len(ds), "P": round(float(np.mean([x[f"P_{side}"] for x in ds])), 3),
                                   "R": round(float(np.mean([x[f"R_{side}"] for x in ds])), 3)}
    return out


def split_groups(seqs: list[str]) -> dict[str, list[str]]:
    """The reporting groups: all sequences, the tuned four, the held-out two."""
    return {"all": seqs, "tuned": [s for s in seqs if s not in HELD_OUT],
            "held-out": [s for s in seqs if s in HELD_OUT]}


def merge_per_frame(a: dict, b: dict, tags: tuple[str, str]) -> dict:
    """Two result files' per-frame J&F over the sequences both hold, each strategy's name
    prefixed with its file's tag, in the layout `paired_ci` reads (frames pair up when the two
    runs used the same anchor points)."""
    seqs = sorted(set(a["sequences"]) & set(b["sequences"]))
    return {q: {"per_frame_jf": {f"{tag} {n}": v for tag, doc in zip(tags, (a, b))
                                 for n, v in doc["sequences"][q]["per_frame_jf"].items()}} for q in seqs}


def paired_ci(results: dict, members: list[str], a: str, b: str, k: int = 5, seed: int = 0) -> dict | None:
    """Mean over sequences of J&F(a) - J&F(b), with a 95 % bootstrap interval.

    Frames of one anchor segment are not independent, so whole segments (k consecutive frames)
    are resampled, within each sequence; the statistic is the mean over sequences, as reported.
    """
    diffs = []
    for s in members:
        pf = results[s].get("per_frame_jf", {})
        if a not in pf or b not in pf:
            return None
        d = np.asarray(pf[a]) - np.asarray(pf[b])
        diffs.append([d[i:i + k] for i in range(0, len(d), k)])
    if not diffs:
        return None
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(BOOT):
        per_seq = []
        for blocks in diffs:
            pick = rng.integers(0, len(blocks), len(blocks))
            per_seq.append(np.concatenate([blocks[i] for i in pick]).mean())
        boots.append(np.mean(per_seq))
    point = float(np.mean([np.concatenate(blocks).mean() for blocks in diffs]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"diff": round(point, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def summarise(results: dict) -> dict:
    seqs = sorted(results)
    names = sorted({n for s in seqs for n in results[s]["scores"]})
    groups = split_groups(seqs)
    table = {}
    for name in names:
        row = {}
        for g, members in groups.items():
            vals = [results[s]["scores"][name] for s in members if name in results[s]["scores"]]
            if not vals:
                continue
            j = float(np.mean([v["J"] for v in vals]))
            f = float(np.mean([v["F"] for v in vals]))
            row[g] = {"J": round(j, 4), "F": round(f, 4), "J&F": round((j + f) / 2, 4)}
        table[name] = row
    frames = sum(results[s]["frames"] for s in seqs)
    wall = sum(results[s]["timing"]["wall_s_per_frame"] * results[s]["frames"] for s in seqs) / frames
    cpu = sum(results[s]["timing"]["cpu_s_per_frame"] * results[s]["frames"] for s in seqs) / frames
    diag = [d for s in seqs for d in results[s].get("fusion_diagnostics", [])]
    branches = {}
    for b in sorted({d["branch"] for d in diag}):
        ds = [d for d in diag if d["branch"] == b]
        branches[b] = {"frames": len(ds), **{key: round(float(np.mean([d[key] for d in ds])), 4)
                                              for key in ("J_forward", "J_backward", "J_fused", "J_nearest", "iou_sides")}}
    paired = {}
    for g, members in groups.items():
        for other in PAIRED[1:]:
            ci = paired_ci(results, members, PAIRED[0], other) if members else None
            if ci is not None:
                paired[f"{g}: {PAIRED[0]} - {other}"] = ci
        ci = paired_ci(results, members, PAIRED[3], PAIRED[0]) if members else None
        if ci is not None:
            paired[f"{g}: {PAIRED[3]} - {PAIRED[0]}"] = ci
        ci = paired_ci(results, members, PAIRED[0], EVERY_FRAME) if members else None
        if ci is not None:
            paired[f"{g}: {PAIRED[0]} - {EVERY_FRAME}"] = ci
    profile = {g: side_profile([d for s in members for d in results[s].get("fusion_diagnostics", [])])
               for g, members in groups.items() if members}
    return {"sequences": seqs, "frames": frames, "k5_fusion_branches": branches, "paired_jf": paired,
            "k5_side_profile": profile,
            "k5_wall_s_per_frame": round(wall, 3),
            "k5_cpu_s_per_frame": round(cpu, 3), "table": table}


def write_atomic(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def print_table(summary: dict) -> None:
    print(f"{'config':38s} {'J':>6s} {'F':>6s} {'J&F':>6s} | {'tuned':>6s} {'held-out':>8s}")
    for name, row in summary["table"].items():
        a = row["all"]
        print(f"{name:38s} {a['J']:6.3f} {a['F']:6.3f} {a['J&F']:6.3f} | "
              f"{row.get('tuned', {}).get('J&F', float('nan')):6.3f} {row.get('held-out', {}).get('J&F', float('nan')):8.3f}")
    for b, v in summary.get("k5_fusion_branches", {}).items():
        print(f"k=5 fuse branch {b!r}: {v}")
    for name, v in summary.get("paired_jf", {}).items():
        print(f"paired J&F difference {name}: {v['diff']:+.3f} (95 % CI {v['ci95'][0]:+.3f} .. {v['ci95'][1]:+.3f})")
    for g, prof in summary.get("k5_side_profile", {}).items():
        print(f"k=5 sides, {g}: " + "; ".join(f"{k} P {v['P']:.3f} R {v['R']:.3f}" for k, v in prof.items()))
    print(f"k=5 mask stage: {summary['k5_wall_s_per_frame']:.3f} s/frame wall, "
          f"{summary['k5_cpu_s_per_frame']:.3f} s/frame CPU ({summary['frames']} frames)")


def _jf(doc: dict | None, name: str, group: str = "all", key: str = "J&F") -> str:
    if doc is None:
        return "-"
    row = doc["summary"]["table"].get(name, {}).get(group)
    return "-" if row is None else f"{row[key]:.3f}"


def markdown_tables(results_dir: Path) -> str:
    """The BENCHMARKS.md tables from mask_stage{,_annotated,_points_file,_oracle_anchors}.json
    (and mask_stage_warp.json, the previous warp-only propagation, when present)."""

    def load(name: str) -> dict | None:
        path = results_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    peak, annot, oracle = load("mask_stage"), load("mask_stage_annotated"), load("mask_stage_oracle_anchors")
    pfile = load("mask_stage_points_file")

    def three(doc: dict | None, n: str) -> str:
        return f"{_jf(doc, n)} ({_jf(doc, n, 'tuned')} / {_jf(doc, n, 'held-out')})"

    # The pipeline-points column only when its result file exists (it needs a full annotate run).
    pcol = " | J&F (pipeline points; tuned / held-out)" if pfile is not None else ""

    def pcell(n: str) -> str:
        return f" | {three(pfile, n)}" if pfile is not None else ""
    from videomolmo.fusion import STRATEGY_DESCRIPTIONS

    lines = ["| strategy | J (peak) | F (peak) | J&F (peak) | J&F tuned / held-out (peak) | J&F (annot.; tuned / held-out)"
             f"{pcol} | J&F, GT masks at anchors |",
             "|---|---|---|---|---|---|---|" + ("---|" if pcol else "")]
    for s, desc in STRATEGY_DESCRIPTIONS.items():
        n = f"k=5 {s} tau=0.7"
        lines.append(f"| {s}: {desc} | {_jf(peak, n, key='J')} | {_jf(peak, n, key='F')} | {_jf(peak, n)} | "
                     f"{_jf(peak, n, 'tuned')} / {_jf(peak, n, 'held-out')} | {three(annot, n)}{pcell(n)} | {_jf(oracle, n)} |")
    for r in DISK_RADII:
        n = f"k=5 disk r={r}px"
        lines.append(f"| disk r = {r} px around the nearest anchor's point | {_jf(peak, n, key='J')} | {_jf(peak, n, key='F')} | "
                     f"{_jf(peak, n)} | {_jf(peak, n, 'tuned')} / {_jf(peak, n, 'held-out')} | {three(annot, n)}{pcell(n)} | - |")
    lines += ["", f"| tau | J&F (peak) | J&F tuned / held-out (peak) | J&F (annot.; tuned / held-out){pcol} "
              "| J&F, GT masks at anchors |", "|---|---|---|---|---|" + ("---|" if pcol else "")]
    for tau in TAUS:
        n = f"k=5 bidirectional tau={tau}"
        lines.append(f"| {tau} | {_jf(peak, n)} | {_jf(peak, n, 'tuned')} / {_jf(peak, n, 'held-out')} | {three(annot, n)}"
                     f"{pcell(n)} | {_jf(oracle, n)} |")
    lines += ["", "| k | bidirectional | forward only | nearest | disk r=60 | bidirectional, GT anchors | forward, GT anchors | nearest, GT anchors |",
              "|---|---|---|---|---|---|---|---|"]
    for k in KS:
        cells = [_jf(peak, f"k={k} {s} tau=0.7") for s in ("bidirectional", "forward", "nearest")]
        cells.append(_jf(peak, f"k={k} disk r=60px"))
        cells += [_jf(oracle, f"k={k} {s} tau=0.7") for s in ("bidirectional", "forward", "nearest")]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines.append("")
    warp = load("mask_stage_warp")
    for label, doc in (("peak", peak), ("annot.", annot), ("pipeline points", pfile), ("GT anchors", oracle),
                       ("peak, warp-only propagation (previous backend)", warp)):
        if doc is None:
            continue
        sm = doc["summary"]
        lines.append(f"- {label}: k=5 mask stage {sm['k5_cpu_s_per_frame']:.3f} s/frame CPU, "
                     f"{sm['k5_wall_s_per_frame']:.3f} s/frame wall; fuse branches: "
                     + "; ".join(f"{b}: {v['frames']} frames, J fwd {v['J_forward']:.3f} / bwd {v['J_backward']:.3f} / "
                                 f"fused {v['J_fused']:.3f} / nearest {v['J_nearest']:.3f}, side IoU {v['iou_sides']:.2f}"
                                 for b, v in sm.get("k5_fusion_branches", {}).items()))
        per_seq = ", ".join(
            f"{q} {(r['scores']['k=5 bidirectional tau=0.7']['J'] + r['scores']['k=5 bidirectional tau=0.7']['F']) / 2:.2f}"
            f" (fwd {(r['scores']['k=5 forward tau=0.7']['J'] + r['scores']['k=5 forward tau=0.7']['F']) / 2:.2f})"
            for q, r in sorted(doc["sequences"].items()))
        lines.append(f"  per sequence, bidirectional J&F: {per_seq}")
        for name, v in sm.get("paired_jf", {}).items():
            lines.append(f"  paired J&F difference, {name}: {v['diff']:+.3f} (95 % CI {v['ci95'][0]:+.3f} .. {v['ci95'][1]:+.3f})")
    if peak is not None and warp is not None:
        # Same anchors (point -> mask is shared), so the two backends' frames pair up.
        merged = merge_per_frame(peak, warp, ("new", "warp"))
        for g, members in split_groups(sorted(merged)).items():
            for s in ("bidirectional", "forward"):
                n = f"k=5 {s} tau=0.7"
                ci = paired_ci(merged, members, f"new {n}", f"warp {n}")
                if ci is not None:
                    lines.append(f"- new - previous (warp-only) propagation, peak, {s}, {g}: {ci['diff']:+.3f} "
                                 f"(95 % CI {ci['ci95'][0]:+.3f} .. {ci['ci95'][1]:+.3f})")
    return "\n".join(lines)



def compare_results(a_path: Path, b_path: Path) -> str:
    """Paired B - A over the sequences both result files hold (two backend settings run on the
    same anchor points), each k=5 strategy both hold, per group."""
    a, b = (json.loads(p.read_text()) for p in (a_path, b_path))
    merged = merge_per_frame(a, b, ("A", "B"))
    seqs = sorted(merged)
    names = sorted(set.intersection(*(set(a["sequences"][q]["per_frame_jf"]) & set(b["sequences"][q]["per_frame_jf"])
                                      for q in seqs))) if seqs else []
    lines = [f"B = {b_path}, A = {a_path}: {', '.join(seqs)}"]
    for g, members in split_groups(seqs).items():
        for n in names:
            ci = paired_ci(merged, members, f"B {n}", f"A {n}") if members else None
            if ci is not None:
                lines.append(f"- {g}, {n}: {ci['diff']:+.3f} (95 % CI {ci['ci95'][0]:+.3f} .. {ci['ci95'][1]:+.3f})")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE` items -> CpuConfig overrides (values parsed as JSON when they are)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
        if isinstance(overrides[key], list):
            overrides[key] = tuple(overrides[key])
    return overrides

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mask_stage.json")
    ap.add_argument("--points", choices=("peak", "annotate", "file"), default="peak")
    ap.add_argument("--points-file", type=Path, default=ROOT / "runs" / "davis16-mini-points.jsonl",
                    help="annotation-pipeline JSONL read by --points file (default: runs/davis16-mini-points.jsonl)")
    ap.add_argument("--candidates", type=int, default=5, help="annotation candidates per frame (--points annotate)")
    ap.add_argument("--seqs", default=None, help="comma-separated sequences (default: all six)")
    ap.add_argument("--ks", default=",".join(map(str, KS)))
    ap.add_argument("--preset", default="default", help="CPU backend preset")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one CpuConfig field of the preset (VALUE is JSON, e.g. motion_threshold=0.7)")
    ap.add_argument("--oracle-anchors", action="store_true",
                    help="diagnostic: ground-truth masks at the anchors (measures propagation + fusion only)")
    ap.add_argument("--tables", action="store_true",
                    help="print the BENCHMARKS.md tables from the result files next to --out and exit")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                    help="paired per-frame J&F B - A of two result files (same points), per k=5 strategy and "
                         "group, and exit")
    args = ap.parse_args(argv)
    if args.compare:
        print(compare_results(*args.compare))
        return 0
    if args.tables:
        print(markdown_tables(args.out.parent))
        return 0
    args.ks = tuple(int(x) for x in args.ks.split(","))
    if not DATA.is_dir():
        print(f"{DATA} not found", file=sys.stderr)
        return 1
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    seqs = args.seqs.split(",") if args.seqs else sorted(p.name for p in (DATA / "JPEGImages").iterdir())
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.points == "file" and not args.points_file.is_file():
        print(f"{args.points_file} not found (needed by --points file)", file=sys.stderr)
        return 1
    overrides = parse_overrides(args.set)
    settings = {"points": args.points, "candidates": args.candidates, "preset": args.preset, "ks": list(args.ks),
                "oracle_anchors": args.oracle_anchors}
    if args.points == "file":
        settings["points_file"] = str(args.points_file)
    if overrides:
        settings["overrides"] = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    if {"oracle_anchors": False, **doc.get("settings", settings)} != settings:
        print(f"{args.out} holds results for other settings {doc['settings']}; use another --out", file=sys.stderr)
        return 1
    doc["settings"] = settings
    results = doc.setdefault("sequences", {})

    from videomolmo.errors import VideoMolmoError
    from videomolmo.segmentation.cpu import CpuPredictor

    try:
        CpuPredictor(args.preset, **overrides)
    except (TypeError, VideoMolmoError) as e:
        print(f"--preset/--set: {e}", file=sys.stderr)
        return 1

    for seq in seqs:
        if seq in results:
            print(f"{seq}: done already, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        results[seq] = run_sequence(seq, args, lambda: CpuPredictor(args.preset, **overrides))
        doc["summary"] = summarise(results)
        write_atomic(args.out, doc)
        r = results[seq]["scores"]["k=5 bidirectional tau=0.7"]
        print(f"{seq}: k=5 bidirectional J={r['J']:.3f} F={r['F']:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print_table(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
