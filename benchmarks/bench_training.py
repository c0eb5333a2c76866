"""Training throughput of the tiny preset (examples/s), as ratios against fp32 batch 8.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_training.py [--steps 6] [--threads 1]

Each variant trains `--steps` real steps on the in-memory synthetic stream (data generation,
preprocessing, forward, backward, AdamW step) after one warm-up step, in this process; the table
reports wall and CPU seconds per example and the ratio of examples/s to the baseline. On a
shared machine wall time moves with the load; CPU time per example is the steadier number.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def run(variant: dict, steps: int) -> tuple[float, float]:
    """(wall s, cpu s) per example over `steps` steps after a warm-up step."""
    from videomolmo.training.trainer import TrainConfig, train

    marks = []

    def on_log(row: dict) -> None:
        if "eval" not in row:
            marks.append((row["step"], time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig.from_name("tiny-synth", steps=steps + 1, log_every=1, eval_every=0,
                                    checkpoint_every=10_000, curriculum="mix", **variant)
        train(cfg, d, progress=False, on_log=on_log)
    (s0, w0, c0), (s1, w1, c1) = marks[0], marks[-1]
    n = (s1 - s0) * cfg.batch_size * cfg.grad_accum
    return (w1 - w0) / n, (c1 - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    variants = {
        "fp32, batch 8 (baseline)": {"batch_size": 8},
        "fp32, batch 16": {"batch_size": 16},
        "fp32, batch 4 x accum 2": {"batch_size": 4, "grad_accum": 2},
        "bf16 autocast, batch 8": {"batch_size": 8, "precision": "bf16"},
    }
    rows = []
    for name, v in variants.items():
        wall, cpu = run(v, a.steps)
        rows.append((name, wall, cpu))
        print(f"{name}: {1 / wall:.2f} examples/s wall, {cpu * 1000:.0f} ms CPU/example", flush=True)
    base_cpu = rows[0][2]
    print()
    print("| variant | examples/s (wall) | CPU ms / example | speed vs baseline (CPU) |")
    print("|---|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {1 / wall:.2f} | {cpu * 1000:.0f} | {base_cpu / cpu:.2f}x |")


if __name__ == "__main__":
    main()
