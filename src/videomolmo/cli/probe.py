"""`videomolmo probe`: what `open_video` sees in a video file or frame folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.text import Text

from videomolmo.cli.app import command, console
from videomolmo.video import FileVideo, FolderVideo, open_video


@command("probe")
def probe(
    source: Path = typer.Argument(..., help="Video file (mp4, webm, avi, mov, mkv) or folder of jpg/png frames."),
    decode: bool = typer.Option(False, "--decode", help="Decode every frame to check the whole video is readable."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Show frame count, fps, size and duration of a video as videomolmo reads it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    with open_video(source) as video:
        info: dict = {
            "source": str(source),
            "kind": "file" if isinstance(video, FileVideo) else "folder" if isinstance(video, FolderVideo) else "frames",
            "frames": len(video),
            "fps": round(video.fps, 3),
            "width": video.width,
            "height": video.height,
            "duration_s": round(video.duration, 3),
            "first_frame": video.frame_names[0],
            "last_frame": video.frame_names[-1],
        }
        if isinstance(video, FileVideo):
            info["frames_in_metadata"] = video.metadata_frames or None
            info["keyframes"] = len(video._index.keyframes) if video._index is not None else None
        if decode:
            n = 0
            with Progress(
                TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=console, transient=True, disable=as_json,
            ) as bar:
                task = bar.add_task("decode", total=len(video))
                for _ in video:  # a corrupt frame raises VideoError naming the file and frame
                    n += 1
                    bar.advance(task)
            info["decoded_frames"] = n
    if as_json:
        console.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        table.add_row(Text(key, style="bold"), "-" if value is None else str(value))
    console.print(table)
