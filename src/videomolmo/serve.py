"""The web demo: a gradio page in front of `videomolmo.pipeline.Pipeline`.

Upload a video (or pick a bundled synthetic example), type a query, set k / tau, and get the
overlay video, the table of points and the count, with a progress bar while it runs. Uploads are
checked before any work: oversized files (configurable limit, also enforced by gradio at upload)
and files that do not decode as video are refused with a message on the page.

`build_demo(pipeline_factory, config)` returns the `gr.Blocks` (tests inject their own pipeline);
`serve(...)` builds and launches it (what `videomolmo serve` calls).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from videomolmo.errors import ConfigError, VideoError, VideoMolmoError
from videomolmo.settings import DEFAULTS, check_params, check_query


@dataclass
class DemoConfig:
    """Limits and defaults of the demo page."""

    max_upload_mb: float = 200.0
    max_frames: int = 3000  # a 2-minute clip at 25 fps; longer uploads are refused, not truncated
    keep_runs: int = 20  # result folders kept on disk; older ones are deleted (a server runs for days)
    k: int = DEFAULTS.k
    tau: float = DEFAULTS.tau
    examples: int = 2
    work_dir: str | None = None  # where results go (a fresh temp dir when None)
    title: str = "VideoMolmo: point at anything in a video"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")


def check_upload(path: str | os.PathLike | None, config: DemoConfig):
    """Open an uploaded file as a video or raise `VideoMolmoError` with a message for the page."""
    from videomolmo.video import open_video

    if path is None:
        raise ConfigError("upload a video (or pick an example) first")
    p = Path(path)
    size_mb = p.stat().st_size / 2**20
    if size_mb > config.max_upload_mb:
        raise ConfigError(f"{p.name} is {size_mb:.1f} MB; this server accepts up to {config.max_upload_mb:g} MB")
    try:
        video = open_video(p)
    except VideoError as exc:
        raise VideoError(f"{p.name} is not a readable video ({_tail(exc)})") from None
    if len(video) > config.max_frames:
        raise ConfigError(f"{p.name} has {len(video)} frames; this server accepts up to {config.max_frames}")
    return video


def _tail(exc: BaseException) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text


def example_clips(out_dir: str | os.PathLike, count: int = 2) -> list[tuple[str, str]]:
    """Write `count` deterministic synthetic clips as mp4; return (path, a query that fits)."""
    from videomolmo import synth
    from videomolmo.video import write_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = synth.SynthConfig(size=224, frames=24)
    clips = []
    for i in range(count):
        clip = synth.generate_clip(synth.clip_rng(0, "test", i), cfg)
        path = out / f"synthetic-{i}.mp4"
        if not path.exists():
            write_video(path, list(clip.frames), fps=8)
        query = clip.expressions[0].text if clip.expressions else "the red circle"
        clips.append((str(path), query))
    return clips


def points_table(result) -> list[list[Any]]:
    """Rows [frame, point #, x, y] of a `PipelineResult`, for the page's table."""
    rows: list[list[Any]] = []
    for i, pts in sorted(result.points.items()):
        if len(pts) == 0:
            rows.append([int(i), 0, None, None])
        for j, (x, y) in enumerate(np.asarray(pts).reshape(-1, 2)):
            rows.append([int(i), j + 1, round(float(x), 1), round(float(y), 1)])
    return rows


def run_query(pipeline, video_path, query: str, k: int, tau: float, config: DemoConfig, work_dir: Path,
              progress: Callable[[float, str], None] | None = None):
    """Everything one click does; returns (overlay mp4 path, table rows, count text).

    Raises `VideoMolmoError` for bad input (shown on the page as a message)."""
    q = check_query(query)
    check_params(int(k), float(tau))
    video = check_upload(video_path, config)

    def prog(stage: str, done: int, total: int) -> None:
        if progress is not None and total:
            # Pointing is the first third of the bar, masks the rest.
            base, span = (0.0, 0.33) if stage == "pointing" else (0.33, 0.67)
            progress(base + span * done / total, f"{stage} {done}/{total}")

    result = pipeline(video, q, k=int(k), tau=float(tau), progress=prog)
    prune_runs(work_dir, config.keep_runs - 1)
    out = Path(tempfile.mkdtemp(prefix="run-", dir=work_dir))
    files = result.save(out, masks=False, overlay=True, progress=prog)
    counts = result.counts
    per_frame = ", ".join(f"#{i}: {c}" for i, c in counts.items())
    count_text = f"{result.count} (per sampled frame: {per_frame})"
    return files["overlay"], points_table(result), count_text


def prune_runs(work_dir: Path, keep: int) -> None:
    """Delete all but the `keep` newest result folders (gradio has its own copy of each output)."""
    runs = sorted(Path(work_dir).glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def build_demo(pipeline_factory: Callable[[], Any], config: DemoConfig | None = None):
    """The gradio page. `pipeline_factory()` is called once, on the first request."""
    import gradio as gr

    config = config or DemoConfig()
    work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="videomolmo-serve-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    holder: dict[str, Any] = {}

    def get_pipeline():
        with lock:
            if "p" not in holder:
                holder["p"] = pipeline_factory()
            return holder["p"]

    def on_submit(video_file, query, k, tau, progress=gr.Progress()):
        path = getattr(video_file, "name", video_file)
        try:
            overlay, table, count = run_query(
                get_pipeline(), path, query, k, tau, config, work_dir,
                progress=lambda f, d: progress(f, desc=d),
            )
        except VideoMolmoError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return overlay, table, count, "done"

    examples = []
    try:
        examples = example_clips(work_dir / "examples", config.examples) if config.examples else []
    except Exception:  # the page still works without examples (e.g. synth missing)
        examples = []

    # delete_cache: gradio's own copies of uploads and outputs older than a day go, hourly.
    with gr.Blocks(title=config.title, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"## {config.title}\nUpload a video, say what to point at, press **Track**.")
        with gr.Row():
            with gr.Column():
                video_in = gr.File(label="Video", elem_id="video-in", file_count="single")
                query_in = gr.Textbox(label="Query", placeholder="e.g. the dog chasing the ball", elem_id="query-in")
                with gr.Row():
                    k_in = gr.Slider(1, 30, value=config.k, step=1, label="k (point every k frames)", elem_id="k-in")
                    tau_in = gr.Slider(0.0, 1.0, value=config.tau, step=0.05, label="tau (fusion IoU)", elem_id="tau-in")
                run_btn = gr.Button("Track", variant="primary", elem_id="run-btn")
                status = gr.Textbox(label="Status", interactive=False, elem_id="status")
            with gr.Column():
                video_out = gr.Video(label="Overlay", elem_id="overlay-out", interactive=False)
                count_out = gr.Textbox(label="Count", interactive=False, elem_id="count-out")
                table_out = gr.Dataframe(headers=["frame", "point", "x", "y"], label="Points",
                                         interactive=False, elem_id="points-out")
        if examples:
            gr.Examples(examples=[[p, q] for p, q in examples], inputs=[video_in, query_in],
                        label="Synthetic examples")
        run_btn.click(on_submit, [video_in, query_in, k_in, tau_in], [video_out, table_out, count_out, status])
    demo.queue(default_concurrency_limit=1)
    demo.videomolmo_work_dir = work_dir  # type: ignore[attr-defined]
    return demo


def launch(demo, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 200.0,
           block: bool = True):
    """Start the server; `block=False` returns at once (tests)."""
    work_dir = getattr(demo, "videomolmo_work_dir", None)
    return demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=int(max_upload_mb * 2**20),  # bytes: gradio refuses bigger uploads itself
        prevent_thread_lock=not block,
        quiet=True,
        show_error=True,
        allowed_paths=[str(work_dir)] if work_dir else None,
        ssr_mode=False,
    )


def cleanup(demo) -> None:
    work_dir = getattr(demo, "videomolmo_work_dir", None)
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
