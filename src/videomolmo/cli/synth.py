"""`videomolmo synth`: write a synthetic spatio-temporal pointing dataset in the MeViS layout."""

from __future__ import annotations

from pathlib import Path

import typer

from videomolmo.cli.app import command, console
from videomolmo.files import ensure_writable_dir
from videomolmo.synth import SynthConfig, split_seed, write_dataset


@command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Dataset folder to write (MeViS layout)."),
    videos: int = typer.Option(100, "--videos", help="Number of clips."),
    seed: int = typer.Option(0, "--seed", help="Seed; the split picks a disjoint stream of it."),
    split: str = typer.Option("train", "--split", help="train | val | test"),
    frames: int = typer.Option(8, "--frames", help="Frames per clip."),
    size: int = typer.Option(112, "--size", help="Frame side in pixels (square)."),
    preset: str = typer.Option("default", "--preset",
                               help="default | eval | single | few | motion"),
) -> None:
    """Generate clips with appearance, motion-only, multi-object, counting and absent queries."""
    from rich.progress import Progress

    split_seed(seed, split)  # validates the split name before any work
    ensure_writable_dir(out)
    cfg = SynthConfig.from_name(preset, size=size, frames=frames)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"synth {split}", total=videos)
        root = write_dataset(out, videos, seed=seed, split=split, config=cfg,
                             progress=lambda i, n: bar.update(task, completed=i))
    console.print(f"wrote {videos} clips ({split}, seed {seed}) to {root}")
