"""`videomolmo segment`: points at anchor frames -> one mask per frame (bidirectional fusion)."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from videomolmo.cli.app import command, console, err_console
from videomolmo.errors import ConfigError, VideoMolmoError
from videomolmo.files import RunSettings


class PointsFileError(VideoMolmoError):
    """A POINTS.json / JSONL file that cannot be read."""


def _point_list(value: Any, where: str) -> list[list[float]]:
    if not isinstance(value, list):
        raise PointsFileError(f"{where}: expected a list of (x, y) points, got {type(value).__name__}")
    out = []
    for p in value:
        if (
            not isinstance(p, (list, tuple))
            or len(p) != 2
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) or c is None for c in p)
        ):
            raise PointsFileError(f"{where}: a point must be two numbers (x, y), got {p!r}")
        # JSON has no NaN literal by default; null (or a NaN that Python's json accepted) is
        # dropped later with a warning, like an out-of-frame point.
        out.append([math.nan if c is None else float(c) for c in p])
    return out


def _frame_key(key: Any, where: str) -> int:
    if isinstance(key, bool):
        raise PointsFileError(f"{where}: frame index {key!r} is not an integer")
    try:
        fi = int(key)
    except (TypeError, ValueError):
        raise PointsFileError(f"{where}: frame index {key!r} is not an integer") from None
    if isinstance(key, float) and key != fi or isinstance(key, str) and not key.strip().lstrip("+-").isdigit():
        raise PointsFileError(f"{where}: frame index {key!r} is not an integer")
    if fi < 0:
        raise PointsFileError(f"{where}: frame index {fi} is negative")
    return fi


def load_points_file(path: str | Path) -> dict[int, list[list[float]]]:
    """Read frame -> [[x, y], ...] pixel points.

    Accepts a JSON object `{"<frame>": [[x, y], ...], ...}` (upstream's points format) or JSONL
    with one `{"frame": i, "points": [[x, y], ...]}` per line (lines for the same frame are
    merged). Raises `PointsFileError` naming the file (and line) on anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise PointsFileError(f"{path}: points file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PointsFileError(f"{path}: cannot read points file ({exc})") from None
    if not text.strip():
        raise PointsFileError(f"{path}: points file is empty")
    out: dict[int, list[list[float]]] = {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as whole:
        # Not one JSON document: JSONL, unless its first line is not JSON either.
        lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        try:
            json.loads(lines[0][1])
        except json.JSONDecodeError:
            raise PointsFileError(f"{path}: not valid JSON ({whole.msg} at line {whole.lineno})") from None
        rows = []
        for n, ln in lines:
            try:
                rows.append((f"{path}:{n}", json.loads(ln)))
            except json.JSONDecodeError as exc:
                raise PointsFileError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    else:
        if isinstance(doc, dict) and "frame" in doc and "points" in doc:
            rows = [(str(path), doc)]  # a one-line JSONL file
        elif isinstance(doc, dict):
            for key, value in doc.items():
                fi = _frame_key(key, str(path))
                out.setdefault(fi, []).extend(_point_list(value, f"{path}: frame {key}"))
            return out
        else:
            raise PointsFileError(
                f"{path}: expected a JSON object mapping frame index to a list of (x, y) points, got {type(doc).__name__}"
            )
    for where, row in rows:
        if not isinstance(row, dict) or "frame" not in row or "points" not in row:
            raise PointsFileError(f'{where}: each line must be an object with "frame" and "points" keys')
        fi = _frame_key(row["frame"], where)
        out.setdefault(fi, []).extend(_point_list(row["points"], where))
    return out


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


@command("segment")
def segment(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    points: Path = typer.Option(..., "--points", help=r'JSON {"<frame>": \[\[x, y], ...]} or JSONL {"frame": i, "points": \[\[x, y], ...]} per line, in pixels.'),
    out: Path = typer.Option(..., "--out", help="Output folder: one 0/255 PNG per frame."),
    k: int = typer.Option(5, "--k", help="Anchor spacing: points are used on frames 0, k, 2k, ..."),
    tau: float = typer.Option(0.7, "--tau", help="Fusion IoU threshold: intersect when the two sides agree at least this much, else unite."),
    backend: str = typer.Option("cpu", "--backend", help="Mask backend: cpu (no weights) or sam2."),
    fusion: str = typer.Option("bidirectional", "--fusion", help="Fusion strategy: bidirectional, forward, prefer-left, prefer-right, intersection, union, larger, smaller, nearest. With the cpu backend nearest measured best (BENCHMARKS.md)."),
    sam2: Optional[Path] = typer.Option(None, "--sam2", help="SAM2 checkpoint folder (Hugging Face format) for --backend sam2."),
    cpu_preset: str = typer.Option("default", "--cpu-preset", help="CPU backend preset: default, fast, still."),
    device: str = typer.Option("cpu", "--device", help="Torch device for --backend sam2."),
) -> None:
    """Turn points at anchor frames into a mask for every frame: masks at anchors 0, k, 2k, ...,
    propagated forward from each anchor and backward from the next, fused per frame.

    Resumable: rerunning the same command after an interruption skips the anchor segments whose
    masks are all written."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from videomolmo.fusion import get_strategy
    from videomolmo.masks import write_mask
    from videomolmo.segmentation.propagation import anchor_frames, segment_video
    from videomolmo.segmentation.registry import BACKENDS, get_predictor
    from videomolmo.video import open_video

    # Validate every option before the (possibly slow) backend loads.
    if k <= 0:
        raise ConfigError(f"--k must be a positive integer, got {k}")
    if not (0.0 <= tau <= 1.0):
        raise ConfigError(f"--tau must be in [0, 1], got {tau}")
    get_strategy(fusion)
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "sam2" and sam2 is None:
        raise ConfigError("--backend sam2 needs --sam2 DIR (a SAM2 checkpoint folder in the Hugging Face format)")
    pts = load_points_file(points)
    vid = open_video(video)
    n = len(vid)
    beyond = sorted(f for f in pts if f >= n)
    if beyond:
        raise PointsFileError(f"{points}: frame index {beyond[0]} is beyond the video {video} ({n} frames, 0..{n - 1})")
    anchors = set(anchor_frames(n, k))
    if backend == "sam2":
        predictor = get_predictor("sam2", model_dir=sam2, device=device)
    else:
        predictor = get_predictor("cpu", config=cpu_preset)
    names = vid.frame_names
    out.mkdir(parents=True, exist_ok=True)
    used = sum(1 for f in pts if f in anchors)
    settings = {
        "video": str(Path(video).resolve()),
        "frames": n,
        "points_sha1": hashlib.sha1(json.dumps(sorted(pts.items())).encode()).hexdigest(),
        "k": k, "tau": tau, "fusion": fusion, "backend": backend,
        "cpu_preset": cpu_preset if backend == "cpu" else None,
        "sam2": str(Path(sam2).resolve()) if backend == "sam2" else None,
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
        with Progress(
            TextColumn("segment"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False,
        ) as bar:
            task = bar.add_task("segment", total=n)
            written = 0
            for fi, mask in segment_video(vid, pts, predictor, k=k, tau=tau, strategy=fusion, skip=skip_segment):
                write_mask(out / f"{names[fi]}.png", mask)
                area += int(np.count_nonzero(mask))
                written += 1
                bar.update(task, completed=written + done[0])
            bar.update(task, completed=n)
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
    resumed = f", {done[0]} kept from an earlier run" if done[0] else ""
    console.print(
        f"{out}: {written} masks written{resumed} ({backend} backend, {fusion} fusion, k={k}, tau={tau}); "
        f"points used on {used} of {len(anchors)} anchor frames; mean mask area {area / max(written, 1):.0f} px",
        highlight=False,
        soft_wrap=True,
    )
