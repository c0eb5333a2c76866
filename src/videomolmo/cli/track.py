"""`videomolmo track` / `point` / `count`: the pipeline on one video from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from videomolmo.cli.app import command, console, err_console
from videomolmo.errors import ConfigError

_MODEL_HELP = "Checkpoint folder (default: the bundled CPU model)."
_PRESET_HELP = "Architecture preset when --model is an upstream Molmo/VideoMolmo shard folder (e.g. videomolmo-7b)."
_POINTER_HELP = "Stage 1: model (VideoMolmo / Molmo checkpoint) or molmo2 (a local Molmo2 folder as --model)."
_CKPT_HELP = "Mask-backend checkpoint folder (--mask-backend sam2 or sam3)."
_BASELINE_HELP = "Molmo+SAM2 baseline: same weights, temporal module off, pointing on the first frame only."


def _progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, disable=not err_console.is_terminal)


class _Stages:
    """Adapts the pipeline's (stage, done, total) callbacks to one rich task per stage."""

    def __init__(self, bar):
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


def _check_out(out: Path) -> Path:
    from videomolmo.files import ensure_writable_dir

    return ensure_writable_dir(out)


def _pipeline(model, preset, baseline, device, mask_backend, sam2, k, tau, l, fusion, first_frame_only,
              pointer="model"):
    from videomolmo.pipeline import Pipeline

    cfg = dict(k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion)
    if first_frame_only is not None:
        cfg["first_frame_only"] = first_frame_only
    return Pipeline.from_pretrained(model, baseline=baseline, device=device, sam2=sam2, preset=preset,
                                    pointer=pointer, **cfg)


def _mask_checkpoint(mask_checkpoint: Path | None, sam2: Path | None) -> Path | None:
    """--mask-checkpoint, or the older --sam2 spelling of it."""
    if mask_checkpoint is not None and sam2 is not None and Path(mask_checkpoint) != Path(sam2):
        raise ConfigError("give the mask checkpoint once: --mask-checkpoint DIR (--sam2 is its old name)")
    return mask_checkpoint if mask_checkpoint is not None else sam2


def _check_pointer(pointer: str, model: str | None) -> None:
    if pointer not in ("model", "molmo2"):
        raise ConfigError(f"--pointer must be 'model' or 'molmo2', got {pointer!r}")
    if pointer == "molmo2" and model is None:
        raise ConfigError("--pointer molmo2 needs --model DIR (a local Molmo2 checkpoint folder)")


def _validate(query: str, k: int, tau: float, l: int, fusion: str = "bidirectional", mask_backend: str = "cpu",
              sam2: Path | None = None):
    """Fail on bad options before loading a model (which takes seconds)."""
    from videomolmo.errors import ConfigError
    from videomolmo.fusion import get_strategy
    from videomolmo.pipeline import check_params, check_query

    q = check_query(query)
    check_params(k, tau, l)
    get_strategy(fusion)
    from videomolmo.segmentation.registry import BACKENDS, CHECKPOINT_BACKENDS

    if mask_backend not in BACKENDS:
        raise ConfigError(f"unknown mask backend {mask_backend!r}; choose one of: {', '.join(BACKENDS)}")
    if mask_backend in CHECKPOINT_BACKENDS and sam2 is None:
        raise ConfigError(f"--mask-backend {mask_backend} needs --mask-checkpoint DIR (a {mask_backend} checkpoint folder)")
    if sam2 is not None and not Path(sam2).is_dir():
        raise ConfigError(f"{sam2}: mask checkpoint directory does not exist")
    return q


def _read_points(path: Path, k: int) -> dict:
    """Points from a file; its frames must be anchors (multiples of k), where stage 2 uses them."""
    from videomolmo.pipeline import read_points_file

    pts = read_points_file(path)
    off = sorted(i for i in pts if i % k)
    if off:
        raise ConfigError(f"{path}: points on frame {off[0]}, which is not a multiple of --k {k}; "
                          "pass the --k the points were made with")
    return pts


def _open(video: Path):
    from videomolmo.pipeline import open_any_video

    return open_any_video(str(video))


@command("track")
def track_cmd(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    query: str = typer.Option(..., "--query", "-q", help="What to track, e.g. \"the dog chasing the ball\"."),
    out: Path = typer.Option(..., "--out", help="Output folder: points.jsonl, count.json, masks/, overlay.mp4."),
    model: Optional[str] = typer.Option(None, help=_MODEL_HELP),
    preset: Optional[str] = typer.Option(None, help=_PRESET_HELP),
    points: Optional[Path] = typer.Option(None, "--points",
                                          help="Skip stage 1: masks from a points.jsonl (e.g. from `videomolmo point`)."),
    baseline: bool = typer.Option(False, "--baseline", help=_BASELINE_HELP),
    first_frame_only: Optional[bool] = typer.Option(None, "--first-frame-only/--every-k",
                                                    help="Point on frame 0 only (baseline default) or every k frames."),
    pointer: str = typer.Option("model", "--pointer", help=_POINTER_HELP),
    mask_backend: str = typer.Option("cpu", "--mask-backend", help="cpu (no downloads), sam2 or sam3."),
    mask_checkpoint: Optional[Path] = typer.Option(None, "--mask-checkpoint", help=_CKPT_HELP),
    sam2: Optional[Path] = typer.Option(None, "--sam2", help="Old name of --mask-checkpoint."),
    k: int = typer.Option(5, help="Point every k-th frame."),
    tau: float = typer.Option(0.7, help="Fusion IoU threshold in [0, 1]."),
    l: int = typer.Option(4, help="Context frames of the temporal module."),
    fusion: str = typer.Option("bidirectional", help="Mask fusion strategy."),
    masks: bool = typer.Option(True, "--masks/--no-masks", help="Write masks/<frame>.png."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay.mp4."),
    device: str = typer.Option("cpu", help="torch device for the model."),
) -> None:
    """Point at QUERY every k frames, turn the points into masks for every frame, write them out."""
    sam2 = _mask_checkpoint(mask_checkpoint, sam2)
    q = _validate(query, k, tau, l, fusion, mask_backend, sam2)
    if points is None:
        _check_pointer(pointer, model)
    given = _read_points(points, k) if points is not None else None
    vid = _open(video)
    out = _check_out(out)
    if given is not None:
        from videomolmo.pipeline import Pipeline, PipelineConfig, StaticPointer

        bad = [i for i in given if i >= len(vid)]
        if bad:
            raise ConfigError(f"{points}: frame {bad[0]} is beyond the video ({len(vid)} frames)")
        pipe = Pipeline(StaticPointer(given), PipelineConfig(k=k, tau=tau, l=l, mask_backend=mask_backend,
                                                             fusion=fusion), sam2=sam2, device=device)
    else:
        pipe = _pipeline(model, preset, baseline, device, mask_backend, sam2, k, tau, l, fusion, first_frame_only,
                         pointer)
    with _progress_bar() as bar:
        res = pipe(vid, q, progress=_Stages(bar))
        files = res.save(out, masks=masks, overlay=overlay, progress=_Stages(bar))
    console.print(f"{len(vid)} frames, points on {len(res.points)}, count {res.count}: "
                  + ", ".join(f"{k_}={v}" for k_, v in files.items()))


@command("point")
def point_cmd(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    query: str = typer.Option(..., "--query", "-q", help="What to point at."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for points.jsonl (default: print)."),
    model: Optional[str] = typer.Option(None, help=_MODEL_HELP),
    preset: Optional[str] = typer.Option(None, help=_PRESET_HELP),
    pointer: str = typer.Option("model", "--pointer", help=_POINTER_HELP),
    baseline: bool = typer.Option(False, "--baseline", help=_BASELINE_HELP),
    first_frame_only: Optional[bool] = typer.Option(None, "--first-frame-only/--every-k"),
    k: int = typer.Option(5, help="Point every k-th frame."),
    l: int = typer.Option(4, help="Context frames of the temporal module."),
    device: str = typer.Option("cpu", help="torch device for the model."),
) -> None:
    """Points only (no masks): frame index -> list of (x, y) pixels, as upstream's points.jsonl."""
    q = _validate(query, k, 0.5, l)
    _check_pointer(pointer, model)
    vid = _open(video)
    if out is not None:
        out = _check_out(out)
    pipe = _pipeline(model, preset, baseline, device, "cpu", None, k, 0.7, l, "bidirectional", first_frame_only,
                     pointer)
    with _progress_bar() as bar:
        res = pipe.point(vid, q, progress=_Stages(bar))
    if out is None:
        console.print(res.points_jsonl(), end="", markup=False, highlight=False, soft_wrap=True)
    else:
        res.save(out, masks=False, overlay=False)
        console.print(f"points on {len(res.points)} frames -> {out / 'points.jsonl'}")


@command("count")
def count_cmd(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    query: str = typer.Option(..., "--query", "-q", help="What to count, e.g. \"the cars\"."),
    model: Optional[str] = typer.Option(None, help=_MODEL_HELP),
    preset: Optional[str] = typer.Option(None, help=_PRESET_HELP),
    pointer: str = typer.Option("model", "--pointer", help=_POINTER_HELP),
    k: int = typer.Option(5, help="Count on every k-th frame."),
    l: int = typer.Option(4, help="Context frames of the temporal module."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    device: str = typer.Option("cpu", help="torch device for the model."),
) -> None:
    """Count = distinct points per sampled frame; the video-level answer is the maximum over them."""
    q = _validate(query, k, 0.5, l)
    _check_pointer(pointer, model)
    vid = _open(video)
    pipe = _pipeline(model, preset, False, device, "cpu", None, k, 0.7, l, "bidirectional", None, pointer)
    with _progress_bar() as bar:
        res = pipe.point(vid, q, progress=_Stages(bar))
    report = res.count_report()
    if as_json:
        console.print(json.dumps(report), markup=False, highlight=False, soft_wrap=True)
    else:
        per = ", ".join(f"#{i}: {c}" for i, c in res.counts.items())
        console.print(f"count: {res.count}   (per sampled frame: {per})", markup=False, highlight=False)
