"""`videomolmo eval`: run a benchmark end to end, resumably, sharded or under torchrun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from videomolmo.cli.app import command, console, err_console
from videomolmo.errors import ConfigError
from videomolmo.files import atomic_write_text


@command("eval")
def eval_cmd(
    bench: str = typer.Argument(..., help="ref-davis17 | ref-youtube-vos | mevis | revos | reasonvos | synthetic | vpos"),
    data: Path = typer.Option(..., "--data", help="Benchmark root folder."),
    out: Path = typer.Option(..., "--out", help="Run directory (rerun the same command to resume)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the benchmark's evaluation split)."),
    model: Optional[str] = typer.Option(None, help="Checkpoint folder or preset (default: the bundled model)."),
    pointer: str = typer.Option("model", help="model: points from the model; oracle: from ground-truth masks; "
                                "molmo2: a local Molmo2 folder given as --model."),
    method: str = typer.Option("pipeline", "--method", help="pipeline: pointer + mask stage + fusion; "
                               "sam3-text: the query straight to Sam3VideoModel (--mask-checkpoint DIR)."),
    baseline: bool = typer.Option(False, "--baseline", help="Molmo+SAM2 baseline: temporal module off, first-frame pointing."),
    k: int = typer.Option(5, help="Point every k-th frame (anchor stride)."),
    tau: float = typer.Option(0.7, help="Fusion IoU threshold in [0, 1]."),
    l: int = typer.Option(4, help="Context frames of the temporal module."),
    mask_backend: str = typer.Option("cpu", "--mask-backend", help="cpu, sam2 or sam3."),
    mask_checkpoint: Optional[Path] = typer.Option(None, "--mask-checkpoint",
                                                   help="sam2 / sam3 checkpoint folder; with --method sam3-text a sam3_video folder."),
    sam2: Optional[Path] = typer.Option(None, "--sam2", help="Old name of --mask-checkpoint."),
    fusion: str = typer.Option("bidirectional", help="Fusion strategy (see videomolmo.fusion)."),
    points_only: bool = typer.Option(False, "--points-only", help="Score points (and counts) only; no masks."),
    shard: Optional[str] = typer.Option(None, help="i/n: this process's share (default: RANK/WORLD_SIZE under torchrun)."),
    merge: bool = typer.Option(False, "--merge", help="Only merge the shards' rows into the summary."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N expressions (smoke runs)."),
    render_worst: int = typer.Option(0, "--render-worst", help="Render the N worst expressions to RUN_DIR/worst/."),
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda:LOCAL_RANK under torchrun, else cpu)."),
) -> None:
    """Evaluate a benchmark: predictions in the official layout, per-expression rows, a summary table."""
    from videomolmo.evaluation import runner, summary
    from videomolmo.pipeline import OraclePointer, Pipeline, PipelineConfig

    from videomolmo.cli.track import _mask_checkpoint

    bench = runner.check_bench(bench)
    sam2 = _mask_checkpoint(mask_checkpoint, sam2)
    if pointer not in ("model", "oracle", "molmo2"):
        raise ConfigError(f"--pointer must be 'model', 'oracle' or 'molmo2', got {pointer!r}")
    if method not in ("pipeline", "sam3-text"):
        raise ConfigError(f"--method must be 'pipeline' or 'sam3-text', got {method!r}")
    if method == "sam3-text" and sam2 is None:
        raise ConfigError("--method sam3-text needs --mask-checkpoint DIR (a sam3_video checkpoint folder)")
    if pointer == "molmo2" and model is None and method == "pipeline":
        raise ConfigError("--pointer molmo2 needs --model DIR (a local Molmo2 checkpoint folder)")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if render_worst < 0:
        raise ConfigError(f"--render-worst must be >= 0, got {render_worst}")
    cfg = PipelineConfig(k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion,
                         first_frame_only=baseline)
    from videomolmo.fusion import get_strategy

    get_strategy(fusion)
    shard_ = runner.Shard.parse(shard)
    dataset = runner.load_benchmark(bench, data, split)
    samples = list(dataset)[:limit] if limit else list(dataset)
    if not samples:
        raise ConfigError(f"{data}: the benchmark has no expressions")
    if pointer == "oracle" and not dataset.has_masks:
        raise ConfigError(f"{data}: --pointer oracle needs ground-truth masks, and this split has none")
    run_cfg = runner.RunConfig(
        bench=bench, data=str(Path(data).resolve()), split=dataset.split, model=model, pointer=pointer,
        k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion, baseline=baseline, limit=limit,
        extra={"points_only": points_only, **({"method": method, "mask_checkpoint": str(sam2)}
                                                if method != "pipeline" else {})},
    )
    run_dir = runner.prepare_run_dir(out, run_cfg)
    units = runner.make_units(bench, samples)

    if not merge:
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if "LOCAL_RANK" in os.environ else "cpu"
        if method == "sam3-text":
            from videomolmo.evaluation.sam3_text import Sam3TextPipeline

            text_pipe = Sam3TextPipeline.from_pretrained(sam2, device=device, k=k, tau=tau, l=l,
                                                         first_frame_only=baseline)

            def make_pipeline(sample):
                return text_pipe
        elif pointer == "oracle":
            base = Pipeline(OraclePointer(lambda i: None), cfg, sam2=sam2, device=device)

            def make_pipeline(sample):
                return base.with_pointer(OraclePointer.from_sample(sample))
        else:
            pipe = Pipeline.from_pretrained(model, baseline=baseline, device=device, sam2=sam2, pointer=pointer,
                                            k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion)

            def make_pipeline(sample):
                return pipe

        ev = runner.Evaluator(bench, run_dir, make_pipeline, k=k, tau=tau, l=l, fusion=fusion,
                              masks=not points_only)
        _run_with_progress(run_dir, units, ev, shard_)

    missing = runner.missing_units(run_dir, units)
    if missing:
        console.print(f"{len(units) - len(missing)}/{len(units)} units done; waiting for the other shards "
                      f"(missing e.g. {missing[0]}). Rerun with --merge once they finish.")
        if merge:
            raise typer.Exit(code=1)
        return
    rows = runner.collect_rows(run_dir, units)
    summ = summary.summarize(bench, rows, expected=sum(len(u.samples) for u in units))
    atomic_write_text(run_dir / "summary.json", summary.dumps(summ))
    md = summary.to_markdown(summ)
    atomic_write_text(run_dir / "summary.md", md)
    console.print(md, markup=False, highlight=False)
    if render_worst:
        from videomolmo.evaluation.summary import worst

        paths = runner.render_rows(run_dir, dataset, worst(rows, render_worst), run_dir / "worst")
        console.print(f"rendered {len(paths)} worst expressions to {run_dir / 'worst'}")


def _run_with_progress(run_dir: Path, units, ev, shard) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from videomolmo.evaluation import runner

    failures: list[str] = []
    with Progress(TextColumn("[bold]eval[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err_console, transient=False,
                  disable=not err_console.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, key: str) -> None:
            bar.update(task, completed=done, total=total, description=key)

        def on_error(unit, exc) -> None:
            failures.append(f"{unit.key}: {exc}")
            err_console.print(f"[yellow]skipped[/] {unit.key}: {exc}", highlight=False)

        status = runner.run_units(run_dir, units, ev.process, shard, progress=progress, on_error=on_error)
    console.print(
        f"shard {shard.index}/{shard.count}: {status.done_now} units evaluated now, "
        f"{status.done_before} already done, {len(status.failed)} skipped for bad input"
    )
    if failures:
        atomic_write_text(run_dir / f"failures.shard-{shard.index}-of-{shard.count}.txt",
                                 "\n".join(failures) + "\n")
