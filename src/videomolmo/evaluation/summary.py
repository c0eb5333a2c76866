"""Summary tables of a benchmark run, in the paper's format.

Pure functions over the per-expression rows the runner writes:

- mask benchmarks (Tables 2-3): J, F and J&F as percentages, mean over expressions (MeViS,
  Ref-YouTube-VOS, ReVOS, ReasonVOS protocol); Ref-DAVIS17 the ReferFormer way: mean over the
  objects of each of the four annotator variants, then the mean over the variants;
- point benchmarks (Table 1): precision, recall and F1 of points, mean over expressions;
- counting (Table 4): MAE and exact-match accuracy (EMA) of the video-level count.

Rows may carry a `category` (e.g. ReVOS referring / reasoning); each category gets its own line.
Point and counting metrics carry bootstrap 95% confidence intervals (`F1_ci`, `EMA_ci`, ...:
[low, high], percentile bootstrap over expressions, fixed seed) beside the point estimates.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Iterable, Sequence

MASK_METRICS = ("J", "F", "JF")
POINT_METRICS = ("P", "R", "F1")
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values: Sequence[float], level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """Percentile bootstrap interval of the mean of `values` (None for fewer than 2 values).

    Seeded, so a summary is reproducible; resampling expressions treats them as independent,
    which they are across clips (a clip's few expressions share a scene, so it is a little
    optimistic there)."""
    import numpy as np

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for s in range(0, samples, 256):  # chunks keep memory flat for large n
        k = min(256, samples - s)
        means[s:s + k] = x[rng.integers(0, x.size, size=(k, x.size))].mean(axis=1)
    a = (1.0 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return [float(lo), float(hi)]


def _mean(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def mask_scores(rows: Sequence[dict]) -> dict[str, float | None]:
    """J, F, J&F in percent, mean over rows (rows without ground truth are skipped)."""
    scored = [r for r in rows if r.get("J") is not None]
    out = {m: _mean(100.0 * r[m] for r in scored if r.get(m) is not None) for m in MASK_METRICS}
    out["n"] = len(scored)
    return out


def davis_scores(rows: Sequence[dict]) -> dict[str, object]:
    """ReferFormer's Ref-DAVIS17 protocol: score each annotator variant, then average variants."""
    by_anno: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_anno[int(r.get("annotator", 0))].append(r)
    variants = {a: mask_scores(by_anno[a]) for a in sorted(by_anno)}
    out: dict[str, object] = {
        m: _mean(v[m] for v in variants.values()) for m in MASK_METRICS
    }
    out["n"] = sum(int(v["n"]) for v in variants.values())
    out["variants"] = {f"anno_{a}": v for a, v in variants.items()}
    return out


def point_scores(rows: Sequence[dict]) -> dict[str, float | None]:
    """Precision, recall, F1 in percent (mean over expressions), plus micro F1 from tp/fp/fn."""
    scored = [r for r in rows if r.get("P") is not None]
    out: dict[str, object] = {m: _mean(100.0 * r[m] for r in scored) for m in POINT_METRICS}
    for m in POINT_METRICS:
        out[f"{m}_ci"] = bootstrap_ci([100.0 * r[m] for r in scored])
    tp = sum(r.get("tp", 0) for r in scored)
    fp = sum(r.get("fp", 0) for r in scored)
    fn = sum(r.get("fn", 0) for r in scored)
    out["micro_F1"] = 100.0 * 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
    out["n"] = len(scored)
    return out


def count_scores(rows: Sequence[dict]) -> dict[str, float | None]:
    """MAE and exact-match accuracy (percent) of the video-level count against `count_gt`."""
    scored = [r for r in rows if r.get("count_gt") is not None and r.get("count") is not None]
    if not scored:
        return {"MAE": None, "EMA": None, "n": 0}
    err = [abs(float(r["count"]) - float(r["count_gt"])) for r in scored]
    return {
        "MAE": sum(err) / len(err),
        "EMA": 100.0 * sum(e == 0 for e in err) / len(err),
        "MAE_ci": bootstrap_ci(err),
        "EMA_ci": bootstrap_ci([100.0 * (e == 0) for e in err]),
        "n": len(scored),
    }


def summarize(bench: str, rows: Sequence[dict], expected: int | None = None) -> dict[str, object]:
    """Every table that applies to these rows, overall and per category."""
    rows = list(rows)

    def masks(rs: Sequence[dict]) -> dict[str, object]:
        return davis_scores(rs) if bench == "ref-davis17" else mask_scores(rs)

    def block(rs: Sequence[dict]) -> dict[str, object]:
        b: dict[str, object] = {}
        if any(r.get("J") is not None for r in rs):
            b["masks"] = masks(rs)
            if any(r.get("baseline_J") is not None for r in rs):
                # The first-frame baseline, aggregated by the same protocol as the method.
                b["baseline"] = masks([{**r, **{m: r.get(f"baseline_{m}") for m in MASK_METRICS}} for r in rs])
        if any(r.get("P") is not None for r in rs):
            b["points"] = point_scores(rs)
        if any(r.get("count_gt") is not None for r in rs):
            b["counting"] = count_scores(rs)
        return b

    out: dict[str, object] = {"bench": bench, "expressions": len(rows), "overall": block(rows)}
    if expected is not None:
        out["expected"] = expected
    cats = sorted({r["category"] for r in rows if r.get("category")})
    if cats:
        out["categories"] = {c: block([r for r in rows if r.get("category") == c]) for c in cats}
    videos = list(dict.fromkeys(r["video"] for r in rows if r.get("video") is not None))
    if len(videos) > 1:
        out["videos"] = {v: block([r for r in rows if r.get("video") == v]) for v in videos}
    if not any(r.get("J") is not None or r.get("P") is not None for r in rows):
        out["note"] = "no ground truth in this split: submit predictions/ to the benchmark's server"
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _fmt_ci(ci) -> str:
    return "-" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def to_markdown(summary: dict) -> str:
    """The summary as markdown tables (columns as in the paper)."""
    lines = [f"# {summary['bench']}: {summary['expressions']} expressions", ""]
    if "note" in summary:
        lines += [summary["note"], ""]
    sections = [("overall", summary["overall"])] + [(f"category {c}", b) for c, b in
                                                    summary.get("categories", {}).items()]
    sections += [(f"video {v}", b) for v, b in summary.get("videos", {}).items()]
    tables: dict[str, list[str]] = defaultdict(list)
    annotators = False
    for name, block in sections:
        if "masks" in block:
            m = block["masks"]
            base = block.get("baseline") or {}
            tables["masks"].append(f"| {name} | {_fmt(m['J'])} | {_fmt(m['F'])} | {_fmt(m['JF'])} | "
                                   f"{_fmt(base.get('JF'))} | {m['n']} |")
            if name == "overall":
                bvars = base.get("variants") or {}
                for vname, v in (m.get("variants") or {}).items():
                    annotators = True
                    who = vname.replace("anno_", "annotator ")
                    tables["masks"].append(f"| {name}, {who} | {_fmt(v['J'])} | {_fmt(v['F'])} | {_fmt(v['JF'])} | "
                                           f"{_fmt((bvars.get(vname) or {}).get('JF'))} | {v['n']} |")
        if "points" in block:
            p = block["points"]
            tables["points"].append(
                f"| {name} | {_fmt(p['P'])} | {_fmt(p['R'])} | {_fmt(p['F1'])} | {_fmt_ci(p.get('F1_ci'))} "
                f"| {_fmt(p['micro_F1'])} | {p['n']} |"
            )
        if "counting" in block:
            c = block["counting"]
            mae = "-" if c["MAE"] is None else f"{c['MAE']:.2f}"
            tables["counting"].append(f"| {name} | {mae} | {_fmt(c['EMA'])} | {_fmt_ci(c.get('EMA_ci'))} | {c['n']} |")
    heads = {
        "masks": "| split | J | F | J&F | first-frame baseline J&F | n |\n|---|---|---|---|---|---|",
        "points": "| split | Precision | Recall | F1 | F1 95% CI | micro F1 | n |\n|---|---|---|---|---|---|---|",
        "counting": "| split | MAE | EMA | EMA 95% CI | n |\n|---|---|---|---|---|",
    }
    for kind in ("masks", "points", "counting"):
        if tables[kind]:
            lines += [heads[kind], *tables[kind], ""]
    if tables["masks"]:
        lines.append("first-frame baseline: the first frame's true mask copied to every frame (no model).")
    if annotators:
        lines.append("Ref-DAVIS17 has expressions from several annotators; J&F is scored per annotator and "
                     "then averaged (ReferFormer's protocol).")
    if tables["masks"]:
        lines.append("")
    return "\n".join(lines)


def worst(rows: Sequence[dict], n: int) -> list[dict]:
    """The `n` lowest-scoring rows (by J&F, else F1), worst first."""
    def score(r: dict) -> float:
        for m in ("JF", "F1"):
            if r.get(m) is not None:
                return float(r[m])
        return math.inf

    ranked = sorted((r for r in rows if score(r) != math.inf), key=lambda r: (score(r), r["key"]))
    return ranked[: max(0, n)]


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
