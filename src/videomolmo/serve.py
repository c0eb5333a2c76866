"""The web demo: a gradio page in front of `videomolmo.pipeline.Pipeline`.

Upload a video (or pick a bundled synthetic example), type a query, set k / tau, and get the
overlay video, the table of points and the count, with a progress bar while it runs. Uploads are
checked before any work: oversized files (configurable limit, also enforced by gradio at upload)
files that do not decode as video, images and one-frame files are refused with a message on the
page. One message box says how a run ended (found, nothing found, or what was wrong); results
download as the overlay plus a zip of masks, points.jsonl and count.json; every request is logged
on the server's stderr.

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
from videomolmo.files import atomic_path
from videomolmo.notices import BundledModelWarning, NothingFoundWarning, nothing_found
from videomolmo.settings import DEFAULTS, check_params, check_query
from videomolmo.video import open_video, write_video


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
    #: One-line notes shown as a banner (the bundled model's limits: `Pipeline.notices()`).
    notices: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.max_upload_mb > 0:
            raise ConfigError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def check_upload(path: str | os.PathLike | None, config: DemoConfig):
    """Open an uploaded file as a video or raise `VideoMolmoError` with a message for the page."""
    if path is None:
        # Also what a person sees after dropping an image or a text file: the page's video box
        # does not take them.
        raise ConfigError("upload a video file first (mp4, webm, mov, ...), or pick an example; "
                          "images and other files are not taken")
    p = Path(path)
    if p.suffix.lower() in IMAGE_SUFFIXES:
        raise VideoError(f"{p.name} is an image; upload a video (mp4, webm, mov, ...)")
    size_mb = p.stat().st_size / 2**20
    if size_mb > config.max_upload_mb:
        raise ConfigError(f"{p.name} is {size_mb:.1f} MB; this server accepts up to {config.max_upload_mb:g} MB")
    try:
        video = open_video(p)
    except VideoError as exc:
        raise VideoError(f"{p.name} is not a readable video ({_reason(exc, p)})") from None
    if len(video) < 2:
        raise VideoError(f"{p.name} has {len(video)} frame; upload a video of at least 2 frames")
    if len(video) > config.max_frames:
        raise ConfigError(f"{p.name} has {len(video)} frames; this server accepts up to {config.max_frames}")
    return video


def _reason(exc: BaseException, path: Path) -> str:
    """The innermost reason of a video error, without the path and the 'not a readable video'
    wrapper the page already says."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    while True:
        low = text.lower()
        for lead in ("not a readable video file (", "not a readable video ("):
            if low.startswith(lead) and text.endswith(")"):
                text = text[len(lead):-1]
                break
        else:
            return text


def example_clips(out_dir: str | os.PathLike, count: int = 2) -> list[tuple[str, str]]:
    """Write `count` deterministic synthetic clips as mp4; return (path, a query that fits)."""
    from videomolmo import synth

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = synth.SynthConfig(size=224, frames=24)
    clips = []
    index = 0
    while len(clips) < count:
        clip = synth.generate_clip(synth.clip_rng(0, "test", index), cfg)
        index += 1
        # An example should refer to one visible sprite (motion-only first): the kinds a user
        # tries first. The test stream is fixed, so the chosen clips are too.
        refs = [e for kind in ("motion", "appearance") for e in clip.expressions if e.kind == kind]
        if not refs and index < 100:
            continue
        path = out / f"synthetic-{len(clips)}.mp4"
        if not path.exists():
            write_video(path, list(clip.frames), fps=8)
        clips.append((str(path), refs[0].text if refs else "the red circle"))
    return clips


TABLE_HEADERS = ["frame", "point", "x", "y", "confidence"]


def points_table(result) -> list[list[Any]]:
    """Rows [frame, point #, x, y, confidence] of a `PipelineResult`, for the page's table."""
    rows: list[list[Any]] = []
    scores = result.scores or {}
    for i, pts in sorted(result.points.items()):
        if len(pts) == 0:
            rows.append([int(i), 0, None, None, None])
        sc = list(scores.get(i, []))
        for j, (x, y) in enumerate(np.asarray(pts).reshape(-1, 2)):
            conf = round(float(sc[j]), 3) if j < len(sc) else None
            rows.append([int(i), j + 1, round(float(x), 1), round(float(y), 1), conf])
    return rows


@dataclass
class QueryResult:
    """What one click produces: files to show and download, and the words around them."""

    overlay: str
    table: list[list[Any]]
    count_text: str
    downloads: list[str]
    message: str


def _eta_text(stage: str, done: int, total: int, started: float) -> str:
    import time

    elapsed = time.monotonic() - started
    text = f"{stage} {done}/{total}"
    if 0 < done < total:
        text += f", about {max(1, round(elapsed * (total - done) / done))} s left"
    return text


def run_query(pipeline, video_path, query: str, k: int, tau: float, config: DemoConfig, work_dir: Path,
              progress: Callable[[float, str], None] | None = None) -> QueryResult:
    """Everything one click does.

    Raises `VideoMolmoError` for bad input (shown on the page as a message)."""
    import time
    import warnings

    q = check_query(query)
    check_params(int(k), float(tau))
    video = check_upload(video_path, config)
    started: dict[str, float] = {}

    def prog(stage: str, done: int, total: int) -> None:
        if progress is not None and total:
            t0 = started.setdefault(stage, time.monotonic())
            # Pointing is the first third of the bar, masks the rest.
            base, span = (0.0, 0.33) if stage == "pointing" else (0.33, 0.67)
            progress(base + span * done / total, _eta_text(stage, done, total, t0))

    with warnings.catch_warnings():
        # The page shows these itself (banner, message); no log spam per request.
        warnings.simplefilter("ignore", BundledModelWarning)
        warnings.simplefilter("ignore", NothingFoundWarning)
        result = pipeline(video, q, k=int(k), tau=float(tau), progress=prog)
    prune_runs(work_dir, config.keep_runs - 1)
    out = Path(tempfile.mkdtemp(prefix="run-", dir=work_dir))
    files = result.save(out, masks=True, overlay=True, progress=prog, sheet=True)
    bundle = _zip_results(out, Path(files["masks"]), Path(files["points"]), Path(files["count"]))
    per_frame = ", ".join(f"#{i}: {c}" for i, c in result.counts.items())
    count_text = f"{result.count} (per sampled frame: {per_frame})"
    if result.found:
        message = f"Found {q!r} on {sum(1 for p in result.points.values() if len(p))} of " \
                  f"{len(result.points)} sampled frames; count {result.count}."
    else:
        message = nothing_found(q, len(result.points)).capitalize() + "."
    return QueryResult(files["overlay"], points_table(result), count_text, [files["overlay"], str(bundle)], message)


def _zip_results(out: Path, masks: Path, points: Path, count: Path) -> Path:
    """masks/*.png, points.jsonl and count.json in one zip, for the page's download."""
    import zipfile

    target = out / "videomolmo-results.zip"
    with atomic_path(target, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for f in sorted(masks.glob("*.png")):
                z.write(f, f"masks/{f.name}")
            z.write(points, "points.jsonl")
            z.write(count, "count.json")
    return target


def prune_runs(work_dir: Path, keep: int) -> None:
    """Delete all but the `keep` newest result folders (gradio has its own copy of each output)."""
    runs = sorted(Path(work_dir).glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def _log_request(request, video_path, query: str, outcome: str, seconds: float) -> None:
    """One line per request in the server's output (who, what, how it ended, how long)."""
    import sys
    import time

    client = getattr(getattr(request, "client", None), "host", None) or \
        f"session {getattr(request, 'session_hash', None) or '-'}"
    name = Path(str(video_path)).name if video_path else "-"
    q = " ".join(str(query or "").split())[:80]
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} request from {client}: video={name} query={q!r} -> {outcome} "
          f"({seconds:.1f} s)", file=sys.stderr, flush=True)


CSS = """
#message.error { border-left: 4px solid #d33; padding-left: 8px; }
#message.ok { border-left: 4px solid #2a2; padding-left: 8px; }
#notice { background: #fff4d6; color: #4a3800; border-radius: 6px; padding: 4px 10px; }
"""


def build_demo(pipeline_factory: Callable[[], Any], config: DemoConfig | None = None):
    """The gradio page. `pipeline_factory()` is called once, on the first request."""
    import time

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

    def message(text: str, ok: bool):
        return gr.update(value=text, elem_classes=["ok" if ok else "error"])

    def on_submit(video_path, query, k, tau, request: gr.Request, progress=gr.Progress()):
        t0 = time.perf_counter()
        try:
            res = run_query(get_pipeline(), video_path, query, k, tau, config, work_dir,
                            progress=lambda f, d: progress(f, desc=d))
        except VideoMolmoError as exc:
            _log_request(request, video_path, query, f"refused: {exc}", time.perf_counter() - t0)
            # Errors go to the one message box (no red badge on every output).
            text = str(exc)
            return None, None, "", None, message(f"Error: {text[0].upper()}{text[1:]}", ok=False)
        _log_request(request, video_path, query, "ok" if "Nothing" not in res.message else "nothing found",
                     time.perf_counter() - t0)
        return res.overlay, res.table, res.count_text, res.downloads, message(res.message, ok=True)

    # gradio finds the request parameter by its annotation; a string one (this module's
    # `from __future__ import annotations`) naming a local import is not resolved.
    on_submit.__annotations__["request"] = gr.Request

    examples = []
    try:
        examples = example_clips(work_dir / "examples", config.examples) if config.examples else []
    except Exception:  # the page still works without examples (e.g. synth missing)
        examples = []

    # delete_cache: gradio's own copies of uploads and outputs older than a day go, hourly.
    with gr.Blocks(title=config.title, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"## {config.title}\nUpload a video, say what to point at, press **Track**.")
        if config.notices:
            gr.Markdown("\n\n".join(n[:1].upper() + n[1:].replace("--model DIR", "`videomolmo serve --model DIR`")
                                    for n in config.notices), elem_id="notice")
        with gr.Row():
            with gr.Column():
                video_in = gr.Video(label="Video", elem_id="video-in", sources=["upload"], interactive=True)
                query_in = gr.Textbox(label="Query", placeholder="e.g. the dog chasing the ball", elem_id="query-in")
                with gr.Row():
                    k_in = gr.Slider(1, 30, value=config.k, step=1, label="k (point every k frames)", elem_id="k-in")
                    tau_in = gr.Slider(0.0, 1.0, value=config.tau, step=0.05, label="tau (fusion IoU)", elem_id="tau-in")
                run_btn = gr.Button("Track", variant="primary", elem_id="run-btn")
                status = gr.Markdown("Upload a video, type a query and press Track.", elem_id="message",
                                     min_height=60)
            with gr.Column():
                # No label on the overlay: it would cover the caption drawn at the frame's top.
                video_out = gr.Video(show_label=False, elem_id="overlay-out", interactive=False, autoplay=True,
                                     loop=True)
                count_out = gr.Textbox(label="Count", interactive=False, elem_id="count-out")
                table_out = gr.Dataframe(headers=TABLE_HEADERS, label="Points (confidence 0-1 from the model)",
                                         interactive=False, elem_id="points-out")
                files_out = gr.File(label="Downloads: overlay video, masks + points (zip)", file_count="multiple",
                                    interactive=False, elem_id="download-out")
        if examples:
            gr.Examples(examples=[[p, q] for p, q in examples], inputs=[video_in, query_in],
                        label="Synthetic examples")
        outputs = [video_out, table_out, count_out, files_out, status]
        # The button is off while a job runs (a second click would only queue behind it); one
        # progress display, on the message box, instead of one per output.
        run_btn.click(lambda: gr.update(interactive=False, value="Running..."), None, run_btn, queue=False) \
            .then(on_submit, [video_in, query_in, k_in, tau_in], outputs, show_progress_on=[status]) \
            .then(lambda: gr.update(interactive=True, value="Track"), None, run_btn, queue=False)
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
        css=CSS,
    )


def cleanup(demo) -> None:
    work_dir = getattr(demo, "videomolmo_work_dir", None)
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
