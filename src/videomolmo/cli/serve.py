"""`videomolmo serve`: the gradio web demo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from videomolmo import serve
from videomolmo.cli import options
from videomolmo.cli.app import command, console
from videomolmo.cli.progress import note
from videomolmo.errors import ConfigError
from videomolmo.pipeline import Pipeline
from videomolmo.pointers.model import check_model_source
from videomolmo.settings import check_device


@command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(7860, help="TCP port."),
    max_upload_mb: float = typer.Option(200.0, "--max-upload-mb", help="Largest accepted upload, in MB."),
    max_frames: int = typer.Option(3000, "--max-frames", help="Longest accepted video, in frames."),
    pointer: str = options.pointer(),
    model: Optional[str] = options.model(),
    preset: Optional[str] = options.preset(),
    mask_backend: str = options.mask_backend(),
    mask_checkpoint: Optional[Path] = options.mask_checkpoint(),
    device: str = options.device(),
) -> None:
    """Serve the web demo: upload a video, type a query, see the overlay, points and count."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError("the web demo needs gradio: pip install 'videomolmo[serve]'") from None
    if max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {max_frames}")
    if not max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    check_device(device)
    if pointer == "model":
        check_model_source(model)
    # Say what the 30-odd seconds before "ready" are spent on (stderr may be a log file).
    note(f"serve: loading the model ({model or 'bundled'}) and the {mask_backend} mask backend ...")
    t0 = time.perf_counter()
    # Load now, so a bad --model fails here with one line instead of on the first click.
    pipe = Pipeline.from_pretrained(model, pointer=pointer, preset=preset, device=device, mask_backend=mask_backend,
                                    mask_checkpoint=mask_checkpoint)
    for text in pipe.notices():
        note(text)
    note(f"serve: model loaded in {time.perf_counter() - t0:.1f} s; building the page and examples ...")
    config = serve.DemoConfig(max_upload_mb=max_upload_mb, max_frames=max_frames, notices=pipe.notices())
    demo = serve.build_demo(lambda: pipe, config)
    console.print(f"VideoMolmo demo ready on http://{host}:{port}  (Ctrl+C to stop; requests are logged below)")
    try:
        serve.launch(demo, host=host, port=port, max_upload_mb=max_upload_mb, block=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    finally:
        serve.cleanup(demo)
