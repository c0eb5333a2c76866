"""`videomolmo eval`: run a benchmark end to end, resumably, sharded or under torchrun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from videomolmo.cli import options
from videomolmo.cli.app import command, console, err_console
from videomolmo.cli.progress import note, stages
from videomolmo.errors import ConfigError
from videomolmo.evaluation import journal, paired, runner, summary
from videomolmo.evaluation.sam3_text import Sam3TextPipeline, validate_sam3_video_dir
from videomolmo.evaluation.summary import worst
from videomolmo.files import atomic_write_text
from videomolmo.fusion import get_strategy
from videomolmo.pipeline import Pipeline
from videomolmo.pointers import build_pointer, pointer_class
from videomolmo.segmentation.registry import check_backend
from videomolmo.settings import PipelineConfig, check_device


@command("eval")
def eval_cmd(
    bench: str = typer.Argument(..., help="ref-davis17 | ref-youtube-vos | mevis | revos | reasonvos | synthetic | vpos"),
    data: Path = typer.Option(..., "--data", help="Benchmark root folder."),
    out: Path = typer.Option(..., "--out", help="Run directory (rerun the same command to resume)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the benchmark's evaluation split)."),
    pointer: str = options.pointer(),
    method: str = typer.Option("pipeline", "--method", help="pipeline: pointer + mask stage + fusion; sam3-text: "
                               "the query straight to Sam3VideoModel (--mask-checkpoint: a sam3_video folder)."),
    model: Optional[str] = options.model(),
    preset: Optional[str] = options.preset(),
    baseline: bool = options.baseline(),
    k: int = options.k(),
    tau: float = options.tau(),
    l: Optional[int] = options.l(),
    mask_backend: str = options.mask_backend(),
    mask_checkpoint: Optional[Path] = options.mask_checkpoint(),
    fusion: str = options.fusion(),
    points_only: bool = typer.Option(False, "--points-only", help="Score points (and counts) only; no masks."),
    shard: Optional[str] = typer.Option(None, help="i/n: this process's share (default: RANK/WORLD_SIZE under torchrun)."),
    merge: bool = typer.Option(False, "--merge", help="Only merge the shards' rows into the summary."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N expressions (smoke runs)."),
    render_worst: int = typer.Option(0, "--render-worst", help="Render the N worst expressions to RUN_DIR/worst/."),
    device: Optional[str] = typer.Option(None, help="torch device (default: cuda:LOCAL_RANK under torchrun, else cpu)."),
    context: str = typer.Option(
        "normal", "--context",
        help="Temporal-context ablation: normal | repeat (the current frame as its own context) | "
             "shuffle (another clip's context) | none (temporal module off)."),
    point_decode: Optional[str] = typer.Option(
        None, "--point-decode",
        help="How the model's points are read out: text (the coordinate digits) | patch (its patch-selection "
             "head places the points the text counts) | patch-count (the head's selected groups are the "
             "points) | patch-extra (patch, plus each further group the head selects that the text's points "
             "missed; the default for a model with that head, else text)."),
) -> None:
    """Evaluate a benchmark: predictions in the official layout, per-expression rows, a summary table."""
    from videomolmo.model.pointing import check_context_mode

    bench = runner.check_bench(bench)
    check_context_mode(context)
    if context != "normal" and pointer != "model":
        raise ConfigError("--context applies to --pointer model only")
    if point_decode is not None and pointer != "model":
        raise ConfigError("--point-decode applies to --pointer model only")
    if pointer == "model" and (point_decode is not None or method == "pipeline"):
        from videomolmo.model.point_head import resolve_point_decode
        from videomolmo.pointers.model import model_config_of

        mcfg = model_config_of(model, preset)
        # Checked before the run folder is written (a model without the head is refused up
        # front). A head model's default is resolved and recorded in the run's settings: it has
        # changed before (patch -> patch-extra), and a resumed run must not mix two read-outs.
        if point_decode is not None or getattr(mcfg, "point_head", "text") == "patch":
            point_decode = resolve_point_decode(point_decode, mcfg)
    pointer_cls = pointer_class(pointer)
    if method not in ("pipeline", "sam3-text"):
        raise ConfigError(f"--method must be 'pipeline' or 'sam3-text', got {method!r}")
    if method == "sam3-text":
        if mask_checkpoint is None:
            raise ConfigError("--method sam3-text needs --mask-checkpoint DIR (a sam3_video checkpoint folder)")
        validate_sam3_video_dir(mask_checkpoint)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if render_worst < 0:
        raise ConfigError(f"--render-worst must be >= 0, got {render_worst}")
    cfg = PipelineConfig(k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion,
                         first_frame_only=baseline)
    get_strategy(fusion)
    if not merge:
        if not points_only and method == "pipeline":
            check_backend(mask_backend, mask_checkpoint)
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if "LOCAL_RANK" in os.environ else "cpu"
        check_device(device)
    shard_ = journal.Shard.parse(shard)
    dataset = runner.load_benchmark(bench, data, split)
    samples = list(dataset)[:limit] if limit else list(dataset)
    if not samples:
        raise ConfigError(f"{data}: the benchmark has no expressions")
    _check_videos_on_disk(data, samples)
    if pointer_cls.needs_sample and not dataset.has_masks:
        raise ConfigError(f"{data}: --pointer {pointer} needs ground-truth masks, and this split has none")
    run_cfg = runner.RunConfig(
        bench=bench, data=str(Path(data).resolve()), split=dataset.split, model=model, pointer=pointer,
        k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion, baseline=baseline, limit=limit,
        # `context` only when ablating, so run folders from before the option still resume.
        extra={"points_only": points_only, **({"context": context} if context != "normal" else {}),
               **({"point_decode": point_decode} if point_decode is not None else {}),
               **({"method": method, "mask_checkpoint": str(mask_checkpoint)} if method != "pipeline" else {})},
    )
    run_dir = runner.prepare_run_dir(out, run_cfg)
    units = runner.make_units(bench, samples)

    if not merge:
        ptr = build_pointer(pointer, model=model, preset=preset, device=device, batch_size=cfg.batch_size,
                            baseline=baseline, **({"context": context} if context != "normal" else {}),
                            **({"point_decode": point_decode} if point_decode is not None else {})) \
            if method == "pipeline" else None
        if method == "sam3-text":
            text_pipe = Sam3TextPipeline.from_pretrained(mask_checkpoint, device=device, config=cfg)
            make_pipeline = lambda sample: text_pipe  # noqa: E731 - one model for every sample
        else:
            pipe = Pipeline(ptr, cfg, mask_checkpoint=mask_checkpoint, device=device)
            pipe.synthetic_input = bench == "synthetic"
            for text in pipe.notices():
                note(text)
            donors = runner.shuffle_donors(samples) if context == "shuffle" else {}

            def make_pipeline(sample):
                if donors:
                    ptr.context_video = donors[sample.video_id].video()
                return pipe.for_sample(sample)
        ev = runner.Evaluator(bench, run_dir, make_pipeline, config=cfg, masks=not points_only)
        failures = _run_with_progress(run_dir, units, ev, shard_)
    else:
        failures = []

    missing = journal.missing_units(run_dir, units)
    if missing and shard_.count == 1 and not merge:
        # Unsharded: nobody else will fill the gaps, so summarize what finished and say why the
        # rest did not (a rerun after fixing the input evaluates just those).
        _write_summary(bench, run_dir, units)
        raise ConfigError(f"{len(missing)} of {len(units)} units failed on bad input (e.g. "
                          f"{failures[0] if failures else missing[0]}); the summary covers the rest; "
                          "fix the input and rerun the same command to finish them")
    if missing:
        console.print(f"{len(units) - len(missing)}/{len(units)} units done; waiting for the other shards "
                      f"(missing e.g. {missing[0]}). Rerun with --merge once they finish.")
        if merge:
            raise typer.Exit(code=1)
        return
    rows = _write_summary(bench, run_dir, units)
    if render_worst:
        paths = runner.render_rows(run_dir, dataset, worst(rows, render_worst), run_dir / "worst")
        console.print(f"rendered {len(paths)} worst expressions to {run_dir / 'worst'}")


def _check_videos_on_disk(data: Path, samples) -> None:
    """Refuse, before any model loads, a benchmark whose metadata names videos not on disk."""
    missing = {}
    for s in samples:
        if s.video_id in missing:
            continue
        paths = list(s.frame_paths)
        if not paths or not Path(paths[0]).is_file():
            missing[s.video_id] = paths[0] if paths else None
    if missing:
        vid, path = next(iter(missing.items()))
        where = f"{path} is missing" if path is not None else "no frames listed"
        raise ConfigError(f"{data}: {len(missing)} video(s) named in the metadata are not on disk "
                          f"(e.g. {vid}: {where})")


def _write_summary(bench: str, run_dir: Path, units) -> list[dict]:

    rows = journal.collect_rows(run_dir, units)
    summ = summary.summarize(bench, rows, expected=sum(len(u.samples) for u in units))
    atomic_write_text(run_dir / "summary.json", summary.dumps(summ))
    md = summary.to_markdown(summ)
    atomic_write_text(run_dir / "summary.md", md)
    console.print(md)
    console.print(f"summary: {run_dir / 'summary.md'} (and summary.json, rows in {run_dir})")
    return rows


def _run_with_progress(run_dir: Path, units, ev, shard) -> list[str]:

    failures: list[str] = []
    with stages("eval") as report:
        def progress(done: int, total: int, key: str) -> None:
            report("units", done, total)

        # Within an expression: its pointing and mask stages, so a long one shows it moves.
        ev.progress = report

        def on_error(unit, exc) -> None:
            failures.append(f"{unit.key}: {exc}")
            err_console.print(Text.assemble(("skipped", "yellow"), f" {unit.key}: {exc}"))

        status = journal.run_units(run_dir, units, ev.process, shard, progress=progress, on_error=on_error)
        ev.progress = None
    console.print(
        f"shard {shard.index}/{shard.count}: {status.done_now} units evaluated now, "
        f"{status.done_before} already done, {len(status.failed)} skipped for bad input"
    )
    if failures:
        atomic_write_text(run_dir / f"failures.shard-{shard.index}-of-{shard.count}.txt",
                                 "\n".join(failures) + "\n")


@command("eval-compare")
def eval_compare_cmd(
    run_a: str = typer.Argument(..., help="Run folder A (the reference); several, comma-separated, pool "
                                          "the pairs folder by folder (e.g. the same comparison on two seeds)."),
    run_b: str = typer.Argument(..., help="Run folder B, evaluated on the same benchmark folder (as many as A)."),
    metric: Optional[list[str]] = typer.Option(None, "--metric",
                                               help="F1 | count_exact | count_abs_err | JF (repeatable; default F1 and count_exact)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result here."),
) -> None:
    """Paired differences (B - A) with bootstrap 95% CIs, per expression kind, of two eval runs."""
    runs_a = [Path(p) for p in run_a.split(",") if p]
    runs_b = [Path(p) for p in run_b.split(",") if p]
    for p in runs_a + runs_b:
        if not p.is_dir():
            raise ConfigError(f"{p}: not a run folder")
    if len(runs_a) != len(runs_b):
        raise ConfigError(f"eval-compare: {len(runs_a)} A folders but {len(runs_b)} B folders; pair them one to one")
    res = paired.compare_runs(runs_a, runs_b, metrics=tuple(metric) if metric else ("F1", "count_exact"))
    if json_out is not None:
        atomic_write_text(json_out, paired.dumps(res))
    console.print(paired.to_markdown(res), markup=False, highlight=False)
