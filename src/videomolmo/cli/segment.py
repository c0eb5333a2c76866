"""`videomolmo segment`: points at anchor frames -> one mask per frame (bidirectional fusion)."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.text import Text

from videomolmo import render
from videomolmo.cli import options
from videomolmo.cli.app import command, console, err_console
from videomolmo.cli.progress import stages
from videomolmo.errors import ConfigError
from videomolmo.files import RunSettings, ensure_writable_dir, ensure_writable_file
from videomolmo.fusion import get_strategy
from videomolmo.masks import read_mask, write_mask
from videomolmo.points import PointsFileError, read_points_file
from videomolmo.segmentation.propagation import segment_video
from videomolmo.segmentation.registry import check_backend, get_predictor
from videomolmo.settings import anchor_frames, check_device, check_params
from videomolmo.video import open_video

SETTINGS_FILE = ".videomolmo-segment.json"


def _resume(out: Path, settings: dict, names: list[str]):
    """`skip(start, end)` for segments already written by an interrupted run with the same settings.

    The settings go to `out/.videomolmo-segment.json` before any mask is written; a folder
    holding masks made with other settings is refused rather than mixed. A folder with no mask
    yet (a run that failed before writing one) starts afresh whatever its settings file says.
    """
    has_masks = any((out / f"{n}.png").is_file() for n in names)
    RunSettings(out / SETTINGS_FILE).check_or_write(settings, what=str(out), fresh=not has_masks)

    def skip(start: int, end: int) -> bool:
        # Each PNG is written atomically, so an existing file is a complete mask.
        return all((out / f"{names[i]}.png").is_file() for i in range(start, end))

    return skip


def _draw(vid, out: Path, names, pts: dict, overlay: Path, progress) -> None:
    """The written masks (read back, so a resumed run is drawn whole) and the given points on
    the video: an mp4 and a contact sheet with a legend."""
    n = len(vid)

    def items():
        for i in range(n):
            progress("overlay", i + 1, n)
            yield render.OverlayFrame(vid[i], i, read_mask(out / f"{names[i]}.png", "any"), pts.get(i))

    render.render(items(), video_path=overlay, sheet_path=overlay.with_suffix(".png"), fps=vid.fps, num_frames=n)


@command("segment")
def segment(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    points: Path = typer.Option(..., "--points", help=r'JSON {"<frame>": \[\[x, y], ...]} or JSONL {"frame": i, "points": \[\[x, y], ...]} per line, in pixels.'),
    out: Path = typer.Option(..., "--out", help="Output folder: one 0/255 PNG per frame."),
    k: int = options.k(),
    tau: float = options.tau(),
    mask_backend: str = options.mask_backend(),
    fusion: str = options.fusion(),
    mask_checkpoint: Optional[Path] = options.mask_checkpoint(),
    cpu_preset: str = typer.Option("default", "--cpu-preset", help="CPU backend preset: default, fast, still."),
    overlay: Optional[Path] = typer.Option(None, "--overlay",
                                           help="Also draw the masks and points on the video: this mp4, plus a "
                                                "contact sheet (.png) beside it."),
    device: str = options.device(),
) -> None:
    """Turn points at anchor frames into a mask for every frame: masks at anchors 0, k, 2k, ...,
    propagated forward from each anchor and backward from the next, fused per frame.

    Resumable: rerunning the same command after an interruption skips the anchor segments whose
    masks are all written."""
    # Validate every option before the (possibly slow) backend loads.
    check_params(k, tau)
    get_strategy(fusion)
    check_backend(mask_backend, mask_checkpoint)
    check_device(device)
    pts = read_points_file(points)
    vid = open_video(video)
    n = len(vid)
    beyond = sorted(f for f in pts if f >= n)
    if beyond:
        raise PointsFileError(f"{points}: frame index {beyond[0]} is beyond the video {video} ({n} frames, 0..{n - 1})")
    anchors = set(anchor_frames(n, k))
    # Backend options: the cpu backend's preset; the others take their checkpoint folder.
    extra = {"config": cpu_preset} if mask_backend == "cpu" else {}
    predictor = get_predictor(mask_backend, checkpoint=mask_checkpoint, device=device, **extra)
    names = vid.frame_names
    out = ensure_writable_dir(out)
    if overlay is not None:
        if overlay.suffix.lower() != ".mp4":
            raise ConfigError(f"--overlay {overlay}: give an .mp4 file name")
        ensure_writable_file(overlay)
    used = sum(1 for f in pts if f in anchors)
    settings = {
        "video": str(Path(video).resolve()),
        "frames": n,
        "points_sha1": hashlib.sha1(json.dumps([[i, p.tolist()] for i, p in sorted(pts.items())]).encode()).hexdigest(),
        "k": k, "tau": tau, "fusion": fusion, "backend": mask_backend,
        "cpu_preset": cpu_preset if mask_backend == "cpu" else None,
        "checkpoint": str(Path(mask_checkpoint).resolve()) if mask_checkpoint is not None else None,
    }
    skip = _resume(out, settings, names)
    done = [0]

    def skip_segment(start: int, end: int) -> bool:
        if skip(start, end):
            done[0] += end - start
            return True
        return False

    area = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with stages("segment") as progress:
            written = 0
            for fi, mask in segment_video(vid, pts, predictor, k=k, tau=tau, strategy=fusion, skip=skip_segment):
                write_mask(out / f"{names[fi]}.png", mask)
                area += int(np.count_nonzero(mask))
                written += 1
                progress("masks", written + done[0], n)
            progress("masks", n, n)
            if overlay is not None:
                _draw(vid, out, names, pts, overlay, progress)
    for w in caught:
        err_console.print(Text.assemble(("warning:", "yellow"), f" {w.message}"), soft_wrap=True)
    if overlay is not None:
        console.print(f"overlay: {overlay} and {overlay.with_suffix('.png')}")
    resumed = f", {done[0]} kept from an earlier run" if done[0] else ""
    console.print(
        f"{out}: {written} masks written{resumed} ({mask_backend} backend, {fusion} fusion, k={k}, tau={tau}); "
        f"points used on {used} of {len(anchors)} anchor frames; mean mask area {area / max(written, 1):.0f} px",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
