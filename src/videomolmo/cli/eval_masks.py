"""`videomolmo eval-masks` (score a prediction folder) and `videomolmo eval-baseline` (the
first-frame-mask baseline, scored the same way)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import typer

from videomolmo.cli.app import command, console
from videomolmo.data import FORMAT_NAMES, load_dataset
from videomolmo.evaluation.masks import evaluate_predictions, first_frame_baseline, per_group, per_video
from videomolmo.files import atomic_write_json, ensure_writable_dir, ensure_writable_file

DATA_HELP = ("Benchmark root: Ref-DAVIS17, Ref-YouTube-VOS, MeViS, ReVOS or ReasonVOS layout "
             "(auto-detected), e.g. ../shared/data/davis16-mini.")
SPLIT_HELP = "Split to score (default: the format's evaluation split with ground truth where there is one)."
FORMAT_HELP = "Skip detection: refdavis, ytvos, mevis, revos or reasonvos."
WORKERS_HELP = "Worker processes (default: all cores)."


def _progress() -> bool:
    # A bar is for people watching a terminal; in logs and pipes it is noise around the result.
    return sys.stderr.isatty()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def print_table(result: dict[str, Any], title: str, kinds: dict[tuple[str, str], str] | None = None) -> None:
    """The J / F / J&F table (percent): one row per video, per expression kind where the
    benchmark labels them (ReVOS referring / reasoning, synthetic kinds), then the overall mean
    over expressions."""
    from rich.table import Table
    from rich.text import Text

    console.print(title, highlight=False, soft_wrap=True, markup=False)
    table = Table()
    table.add_column("video")
    table.add_column("expr.", justify="right")
    for name in ("J", "F", "J&F"):
        table.add_column(name, justify="right")
    for row in per_video(result):
        table.add_row(row["video"], str(row["expressions"]), _pct(row["J"]), _pct(row["F"]), _pct(row["J&F"]))
    groups = per_group(result, kinds or {})
    if len(groups) > 1:
        table.add_section()
        for row in groups:
            table.add_row(Text(f"kind: {row['group']}", style="italic"), str(row["expressions"]), _pct(row["J"]),
                          _pct(row["F"]), _pct(row["J&F"]))
    overall = result["overall"]
    table.add_section()
    table.add_row(*(Text(c, style="bold") for c in ("overall", str(len(result["expressions"])), _pct(overall["J"]),
                                                     _pct(overall["F"]), _pct(overall["J&F"]))))
    console.print(table)
    if result["missing"]:
        shown = ", ".join(result["missing"][:5]) + (" ..." if len(result["missing"]) > 5 else "")
        console.print(Text.assemble((f"{len(result['missing'])} missing prediction(s) scored 0:", "yellow"),
                                    f" {shown}"), soft_wrap=True)


def _kinds(dataset) -> dict[tuple[str, str], str]:
    return {s.key: str(s.meta["kind"]) for s in dataset if s.meta.get("kind") is not None}


def _load(data: Path, split: Optional[str], fmt: Optional[str]):
    dataset = load_dataset(data, split=split, fmt=fmt)
    return dataset, FORMAT_NAMES.get(dataset.format, dataset.format)


def _title(name: str, dataset, pred: str, seconds: float) -> str:
    split = f" [{dataset.split}]" if dataset.split else ""
    return (f"{name}{split}: {len(dataset)} expressions on {len(dataset.videos())} videos, "
            f"predictions {pred}, {seconds:.1f} s (MeViS protocol: means over expressions)")


@command("eval-masks")
def eval_masks(
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    pred: Path = typer.Option(..., "--pred", help="Predictions: PRED/<video>/<exp_id>/<frame>.png (non-zero = object)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON (atomically)."),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    fmt: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
) -> None:
    """Score predicted masks against a benchmark: J, F and J&F per video and overall.

    A missing expression folder or frame scores 0 and is listed; a prediction whose size differs from the ground truth is an error.
    """
    t0 = time.perf_counter()
    if json_out is not None:
        ensure_writable_file(json_out)
    dataset, name = _load(data, split, fmt)
    result = evaluate_predictions(dataset, pred, workers=workers, progress=_progress())
    if json_out is not None:
        atomic_write_json(json_out, result)
    print_table(result, _title(name, dataset, str(pred), time.perf_counter() - t0), _kinds(dataset))
    if json_out is not None:
        console.print(f"scores written to {json_out}", highlight=False, markup=False)


@command("eval-baseline")
def eval_baseline(
    data: Path = typer.Option(..., "--data", help=DATA_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Keep the baseline's predictions here "
                                       "(submission layout); default: a temporary folder, removed afterwards."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores as JSON (atomically)."),
    split: Optional[str] = typer.Option(None, "--split", help=SPLIT_HELP),
    fmt: Optional[str] = typer.Option(None, "--format", help=FORMAT_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
) -> None:
    """Baseline: copy each expression's first-frame ground-truth mask to every frame, then score it exactly as eval-masks does.

    Prints the J / F / J&F table; the interim main job on ../shared/data/davis16-mini.
    """
    t0 = time.perf_counter()
    if json_out is not None:
        ensure_writable_file(json_out)
    if out is not None:
        ensure_writable_dir(out)
    dataset, name = _load(data, split, fmt)

    def run(pred_dir: Path) -> dict:
        first_frame_baseline(dataset, pred_dir, workers=workers, progress=_progress())
        return evaluate_predictions(dataset, pred_dir, workers=workers, progress=_progress())

    if out is None:
        with tempfile.TemporaryDirectory(prefix="videomolmo-baseline-") as tmp:
            result = run(Path(tmp))
        where = "first-frame GT copied to all frames"
    else:
        result = run(out)
        where = f"first-frame GT copied to all frames, in {out}"
    if json_out is not None:
        atomic_write_json(json_out, result)
    print_table(result, _title(name, dataset, where, time.perf_counter() - t0), _kinds(dataset))
    if json_out is not None:
        console.print(f"scores written to {json_out}", highlight=False, markup=False)
