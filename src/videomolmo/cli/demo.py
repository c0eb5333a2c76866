"""`videomolmo demo`: synthetic clip -> bundled model -> CPU masks -> files + scores."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from videomolmo.cli import options
from videomolmo.cli.app import command, console
from videomolmo.cli.progress import stages
from videomolmo.demo import DEMO_SETTINGS, run_demo
from videomolmo.settings import check_params


@command("demo")
def demo(
    out: Path = typer.Option(Path("videomolmo-demo"), "--out", help="Output folder."),
    seed: int = typer.Option(2024, "--seed", help="Which synthetic clip (demo seed stream)."),
    k: int = typer.Option(DEMO_SETTINGS.k, "--k", help="Point on every k-th frame."),
    tau: float = options.tau(),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads."),
) -> None:
    """Run the bundled CPU model on a synthetic clip with a motion-only and a counting query."""
    import time

    import torch
    from rich.table import Table

    check_params(k, tau)

    # One thread by default: the tiny model's matrices are too small to gain from more, and with
    # another process on one of this 2-core machine's cores, 2 threads took the demo from 7 s
    # to 96 s (each parallel region waits for the busy core).
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with stages("demo", interval=2.0) as progress:
        reports = run_demo(out, seed=seed, k=k, tau=tau, progress=progress)
    for r in reports:
        first = min(r.points)
        console.print(Text.assemble((r.kind, "bold"), f" query: {r.query!r}"))
        console.print(f"  frame {first} points: {r.points[first]}")
        console.print(f"  count: {r.count} (ground truth {r.gt_count})")
    table = Table("query", "kind", "point F1", "count / GT", "J", "F", "J&F")
    for r in reports:
        table.add_row(r.query, r.kind, f"{r.point_f1:.3f}", f"{r.count} / {r.gt_count}",
                      f"{r.j:.3f}", f"{r.f:.3f}", f"{r.jf:.3f}")
    console.print(table)
    console.print(f"wrote {out}/<kind>/(points.jsonl, count.json, masks/, overlay.mp4, overlay.png) and "
                  f"{out}/summary.json in {time.perf_counter() - t0:.1f} s")
