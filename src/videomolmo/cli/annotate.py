"""`videomolmo annotate`: ground-truth masks -> best single-click training points (JSONL)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from videomolmo.annotation import AnnotationConfig, annotate_dataset, parse_shard
from videomolmo.cli import options
from videomolmo.cli.app import command, console
from videomolmo.data import load_dataset
from videomolmo.errors import DatasetError
from videomolmo.segmentation.registry import check_backend, get_predictor
from videomolmo.settings import check_device


@command("annotate")
def annotate(
    data_dir: Path = typer.Argument(..., help="Dataset folder in any supported layout (Ref-DAVIS17, Ref-YouTube-VOS, MeViS, ReVOS, ReasonVOS)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL; an existing file is resumed."),
    mask_backend: str = options.mask_backend(),
    mask_checkpoint: Optional[Path] = options.mask_checkpoint(),
    candidates: int = typer.Option(10, "--candidates", help="Candidate clicks per (object, frame); the best by IoU is kept."),
    seed: int = typer.Option(0, "--seed", help="Seed; each (video, object, frame) derives its own stream from it."),
    shard: str = typer.Option("0/1", "--shard", help="i/n: annotate the i-th of n disjoint video shards."),
    frame_step: int = typer.Option(1, "--frame-step", help="Annotate every n-th listed frame."),
    video_cue: bool = typer.Option(True, "--video-cue/--no-video-cue",
                                   help="Segment each click on the video (the backend's motion cue, as at the mask stage's "
                                        "anchors) rather than on the frame alone; backends without a video cue ignore it."),
    split: Optional[str] = typer.Option(None, "--split", help="Dataset split, for layouts that have several."),
    device: str = options.device(),
) -> None:
    """Turn ground-truth masks into training points: per (video, object, frame), the best of k
    distance-weighted candidate clicks by IoU of the backend's mask with the ground truth.

    Resumable (rerun the same command after a crash) and shardable (--shard i/n on n machines,
    then concatenate the outputs)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    AnnotationConfig(candidates=candidates, frame_step=frame_step, backend=mask_backend)  # validate before any loading
    check_backend(mask_backend, mask_checkpoint)
    check_device(device)
    shard_spec = parse_shard(shard)
    if not data_dir.exists():
        raise DatasetError(f"{data_dir}: dataset folder does not exist")
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a folder")

    dataset = load_dataset(data_dir, split=split)
    predictor = get_predictor(mask_backend, checkpoint=mask_checkpoint, device=device)

    with Progress(TextColumn("annotate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task("annotate", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = annotate_dataset(dataset, predictor, out, candidates=candidates, seed=seed, shard=shard_spec,
                                  frame_step=frame_step, backend_name=mask_backend, progress=progress,
                                  video_cue=video_cue)
    per_frame = report.seconds_predicting / report.predicted_frames if report.predicted_frames else 0.0
    console.print(
        f"{out}: {report.written} rows written ({report.empty} with the object absent, "
        f"{report.reused} reused from another expression), {report.skipped} already done; "
        f"{report.predicted_frames} (object, frame) pairs at {per_frame:.3f} s each"
        + (f", mean best IoU {report.mean_iou:.3f}" if report.mean_iou is not None else "")
    )
