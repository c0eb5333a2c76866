"""`videomolmo track` / `point` / `count`: the pipeline on one video from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from videomolmo.cli import options
from videomolmo.cli.app import command, console
from videomolmo.cli.progress import note, notes_printed_once, stages
from videomolmo.errors import ConfigError
from videomolmo.files import ensure_writable_dir
from videomolmo.fusion import get_strategy
from videomolmo.notices import nothing_found
from videomolmo.pipeline import Pipeline, PipelineConfig
from videomolmo.pointers import build_pointer
from videomolmo.points import read_points_file
from videomolmo.segmentation.registry import check_backend
from videomolmo.settings import DEFAULTS, check_device, check_params, check_query
from videomolmo.video import open_video


def _pipeline(pointer, model, preset, baseline, device, first_frame_only, mask_checkpoint=None, **cfg):
    if first_frame_only is not None:
        cfg["first_frame_only"] = first_frame_only
    return Pipeline.from_pretrained(model, pointer=pointer, baseline=baseline, device=device,
                                    mask_checkpoint=mask_checkpoint, preset=preset, **cfg)


def _validate(query: str, k: int, tau: float, l: Optional[int], device: str, fusion: str | None = None,
              mask_backend: str | None = None, mask_checkpoint: Path | None = None) -> str:
    """Fail on bad options before loading a model (which takes seconds)."""
    q = check_query(query)
    check_params(k, tau, l)
    if fusion is not None:
        get_strategy(fusion)
    if mask_backend is not None:
        check_backend(mask_backend, mask_checkpoint)
    check_device(device)
    return q


def _read_points(path: Path, k: int) -> dict:
    """Points from a file; its frames must be anchors (multiples of k), where stage 2 uses them."""
    pts = read_points_file(path)
    off = sorted(i for i in pts if i % k)
    if off:
        raise ConfigError(f"{path}: points on frame {off[0]}, which is not a multiple of --k {k}; "
                          "pass the --k the points were made with")
    return pts


@command("track")
def track_cmd(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    query: str = typer.Option(..., "--query", "-q", help="What to track, e.g. \"the dog chasing the ball\"."),
    out: Path = typer.Option(..., "--out", help="Output folder: points.jsonl, count.json, masks/, overlay.mp4, "
                                                "overlay.png (contact sheet)."),
    pointer: str = options.pointer(),
    model: Optional[str] = options.model(),
    preset: Optional[str] = options.preset(),
    points: Optional[Path] = typer.Option(None, "--points",
                                          help="Skip stage 1: masks from a points.jsonl (e.g. from `videomolmo point`)."),
    baseline: bool = options.baseline(),
    first_frame_only: Optional[bool] = typer.Option(None, "--first-frame-only/--every-k",
                                                    help="Point on frame 0 only (baseline default) or every k frames."),
    mask_backend: str = options.mask_backend(),
    mask_checkpoint: Optional[Path] = options.mask_checkpoint(),
    k: int = options.k(),
    tau: float = options.tau(),
    l: Optional[int] = options.l(),
    fusion: str = options.fusion(),
    masks: bool = typer.Option(True, "--masks/--no-masks", help="Write masks/<frame>.png."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", help="Write overlay.mp4."),
    device: str = options.device(),
) -> None:
    """Point at QUERY every k frames, turn the points into masks for every frame, write them out."""
    q = _validate(query, k, tau, l, device, fusion, mask_backend, mask_checkpoint)
    given = _read_points(points, k) if points is not None else None
    vid = open_video(video)
    out = ensure_writable_dir(out)
    cfg = dict(k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion)
    if given is not None:
        bad = [i for i in given if i >= len(vid)]
        if bad:
            raise ConfigError(f"{points}: frame {bad[0]} is beyond the video ({len(vid)} frames)")
        pipe = _static_pipeline(given, device, mask_checkpoint, **cfg)
    else:
        pipe = _pipeline(pointer, model, preset, baseline, device, first_frame_only, mask_checkpoint, **cfg)
    _announce(pipe)
    with stages("track") as progress, notes_printed_once():
        res = pipe(vid, q, progress=progress)
        files = res.save(out, masks=masks, overlay=overlay, progress=progress, sheet=overlay)
    _report_found(res)
    console.print(f"{len(vid)} frames, points on {len(res.points)}, count {res.count}{_score_text(res)}: "
                  + ", ".join(f"{k_}={v}" for k_, v in files.items()))


def _announce(pipe) -> None:
    """Notes due before the (slow) run: the bundled model on real footage."""
    for text in pipe.notices():
        note(text)


def _report_found(res) -> None:
    if not res.found:
        note(nothing_found(res.query, len(res.points)))


def _score_text(res) -> str:
    """The mean point confidence (when the pointer gives one) and the mean mask confidence
    (when the mask backend gives one)."""
    flat = [float(s) for v in (res.scores or {}).values() for s in v]
    text = f", mean point confidence {np.mean(flat):.2f}" if flat else ""
    if res.mask_scores:
        text += f", mean mask confidence {np.mean(list(res.mask_scores.values())):.2f}"
    return text


def _static_pipeline(points: dict, device: str, mask_checkpoint, **cfg):
    return Pipeline(build_pointer("static", points=points), PipelineConfig(**cfg), mask_checkpoint=mask_checkpoint,
                    device=device)


def _points_only(stage, video, query, out, pointer, model, preset, baseline, device, first_frame_only, k, l):
    """Stage 1 alone (point, count): options checked before the model loads; (result, out dir)."""
    q = _validate(query, k, DEFAULTS.tau, l, device)
    vid = open_video(video)
    if out is not None:
        out = ensure_writable_dir(out)
    pipe = _pipeline(pointer, model, preset, baseline, device, first_frame_only, k=k, l=l)
    _announce(pipe)
    with stages(stage) as progress, notes_printed_once():
        res = pipe.point(vid, q, progress=progress)
    _report_found(res)
    return res, out


@command("point")
def point_cmd(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    query: str = typer.Option(..., "--query", "-q", help="What to point at."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for points.jsonl (default: print)."),
    pointer: str = options.pointer(),
    model: Optional[str] = options.model(),
    preset: Optional[str] = options.preset(),
    baseline: bool = options.baseline(),
    first_frame_only: Optional[bool] = typer.Option(None, "--first-frame-only/--every-k",
                                                    help="Point on frame 0 only (baseline default) or every k frames."),
    k: int = options.k(),
    l: Optional[int] = options.l(),
    device: str = options.device(),
) -> None:
    """Points only (no masks): frame index -> list of (x, y) pixels, as upstream's points.jsonl."""
    res, out = _points_only("point", video, query, out, pointer, model, preset, baseline, device,
                            first_frame_only, k, l)
    if out is None:
        console.print(res.points_jsonl(), end="", markup=False, highlight=False, soft_wrap=True)
    else:
        res.save(out, masks=False, overlay=False)
        console.print(f"points on {len(res.points)} frames -> {out / 'points.jsonl'}", markup=False, highlight=False)


@command("count")
def count_cmd(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    query: str = typer.Option(..., "--query", "-q", help="What to count, e.g. \"the cars\"."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for count.json and points.jsonl."),
    pointer: str = options.pointer(),
    model: Optional[str] = options.model(),
    preset: Optional[str] = options.preset(),
    k: int = options.k(),
    l: Optional[int] = options.l(),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    device: str = options.device(),
) -> None:
    """Count = distinct points per sampled frame; the video-level answer is the maximum over them."""
    res, out = _points_only("count", video, query, out, pointer, model, preset, False, device, None, k, l)
    if out is not None:
        res.save(out, masks=False, overlay=False)
    report = res.count_report()
    if as_json:
        console.print(json.dumps(report), markup=False, highlight=False, soft_wrap=True)
    else:
        per = ", ".join(f"#{i}: {c}" for i, c in res.counts.items())
        console.print(f"count: {res.count}   (per sampled frame: {per}){_score_text(res)}")
