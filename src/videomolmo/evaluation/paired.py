"""Paired differences between two evaluation runs on the same clips and queries.

Two `videomolmo eval` runs of different models (or of one model under different `--context`
settings) on the same benchmark folder score the same expressions; comparing them expression by
expression removes the between-clip variance that dominates two independent means. For each
metric and category: the mean of A, of B, of B - A over the expressions both runs scored, and a
percentile bootstrap 95% interval of that mean difference (seeded).

    videomolmo eval-compare RUN_A RUN_B [--json out.json]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from videomolmo.errors import ConfigError, DatasetError
from videomolmo.evaluation.journal import read_all_rows
from videomolmo.evaluation.summary import BOOTSTRAP_SAMPLES, BOOTSTRAP_SEED

# Per-expression metrics (fraction scale): name -> value of a row, or None if not scored.
ROW_METRICS: dict[str, Callable[[dict], float | None]] = {
    "F1": lambda r: None if r.get("F1") is None else float(r["F1"]),
    "count_exact": lambda r: (None if r.get("count_gt") is None or r.get("count") is None
                              else float(float(r["count"]) == float(r["count_gt"]))),
    "count_abs_err": lambda r: (None if r.get("count_gt") is None or r.get("count") is None
                                else abs(float(r["count"]) - float(r["count_gt"]))),
    "JF": lambda r: None if r.get("JF") is None else float(r["JF"]),
}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Mean of a, of b, of b - a, and the bootstrap interval of mean(b - a) (pairs resampled)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    n = a.size
    out = {"n": int(n), "a": float(a.mean()) if n else None, "b": float(b.mean()) if n else None,
           "diff": float((b - a).mean()) if n else None, "ci": None}
    if n >= 2:
        d = b - a
        rng = np.random.default_rng(seed)
        means = np.empty(samples)
        for s in range(0, samples, 256):
            k = min(256, samples - s)
            means[s:s + k] = d[rng.integers(0, n, size=(k, n))].mean(axis=1)
        lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
        out["ci"] = [float(lo), float(hi)]
    return out


def paired_difference(rows_a: Sequence[dict], rows_b: Sequence[dict], metric: str = "F1",
                      category: str | None = None) -> dict:
    """Paired comparison of `metric` (a `ROW_METRICS` name) over the expressions (row `key`)
    that both runs scored, optionally only those of one `category`. The two runs must have asked
    the same queries: a key whose expression text differs is an error."""
    if metric not in ROW_METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose from {', '.join(ROW_METRICS)}")
    get = ROW_METRICS[metric]
    by_b = {r["key"]: r for r in rows_b}
    a_vals, b_vals = [], []
    for ra in rows_a:
        rb = by_b.get(ra["key"])
        if rb is None or (category is not None and ra.get("category") != category):
            continue
        if ra.get("expression") != rb.get("expression"):
            raise DatasetError(f"{ra['key']}: the runs asked different queries "
                               f"({ra.get('expression')!r} vs {rb.get('expression')!r}); compare runs on one benchmark folder")
        va, vb = get(ra), get(rb)
        if va is None or vb is None:
            continue
        a_vals.append(va)
        b_vals.append(vb)
    res = paired_bootstrap(a_vals, b_vals)
    res["metric"] = metric
    res["category"] = category
    return res


def _read_runs(runs: Sequence[str | Path]) -> dict:
    """Rows of one side; with several folders (e.g. the same comparison on two seeds' clips)
    each folder's keys are prefixed by its position, so only folder i of A pairs with folder i
    of B."""
    out = {}
    for i, run in enumerate(runs):
        rows = read_all_rows(run)
        if not rows:
            raise DatasetError(f"{run}: no evaluation rows; is this a `videomolmo eval` run folder?")
        for key, row in rows.items():
            k = key if len(runs) == 1 else f"{i}:{key}"
            out[k] = {**row, "key": k}
    return out


def compare_runs(run_a: str | Path | Sequence[str | Path], run_b: str | Path | Sequence[str | Path],
                 metrics: Sequence[str] = ("F1", "count_exact")) -> dict:
    """Paired differences of two run folders (or two equally long lists of folders, pooled
    pairwise), overall and per category, for each metric that has paired values. Returns
    {"a", "b", "unmatched", "rows": [paired_difference results]}."""
    runs_a = [run_a] if isinstance(run_a, (str, Path)) else list(run_a)
    runs_b = [run_b] if isinstance(run_b, (str, Path)) else list(run_b)
    if len(runs_a) != len(runs_b) or not runs_a:
        raise DatasetError(f"compare: give as many A folders as B folders (got {len(runs_a)} and {len(runs_b)})")
    ra, rb = _read_runs(runs_a), _read_runs(runs_b)
    a_rows, b_rows = list(ra.values()), list(rb.values())
    shared = set(ra) & set(rb)
    if not shared:
        raise DatasetError(f"{run_a} and {run_b} share no expressions; run both on the same benchmark folder")
    cats = [None] + sorted({r["category"] for r in a_rows if r.get("category")})
    rows = []
    for m in metrics:
        for c in cats:
            d = paired_difference(a_rows, b_rows, m, c)
            if d["n"]:
                rows.append(d)
    return {"a": ",".join(map(str, runs_a)), "b": ",".join(map(str, runs_b)), "paired": len(shared),
            "unmatched": len(set(ra) ^ set(rb)), "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [f"A = {result['a']}, B = {result['b']}: {result['paired']} paired expressions"
             + (f" ({result['unmatched']} unmatched, left out)" if result["unmatched"] else ""), "",
             "| metric | category | n | A | B | B - A | 95% CI of B - A |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = "-" if r["ci"] is None else f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"
        lines.append(f"| {r['metric']} | {r['category'] or 'all'} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} "
                     f"| {r['diff']:+.3f} | {ci} |")
    return "\n".join(lines) + "\n"


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True) + "\n"
