"""VideoMolmo end to end: pointing (stage 1) + masks (stage 2) + counts, in one object.

    >>> from videomolmo.pipeline import Pipeline
    >>> pipe = Pipeline.from_pretrained()                 # bundled CPU default; or a preset / dir
    >>> result = pipe("clip.mp4", "the dog chasing the ball", k=5, tau=0.7)
    >>> result.points[0]                                  # (N, 2) pixel (x, y) on frame 0
    >>> result.count                                      # video-level count
    >>> for i, mask in result.masks():                    # streamed, flat memory
    ...     ...
    >>> result.save("out/")                               # points.jsonl, masks/, overlay.mp4

Stage 1 is a *pointer*: anything that maps (video, query, anchor frames) to pixel points per
frame. `ModelPointer` runs a VideoMolmo checkpoint; `OraclePointer` takes points from ground-truth
masks, which isolates the mask stage for evaluation; `StaticPointer` replays given points.
Stage 2 is `videomolmo.segmentation.propagation.segment_video` with a mask predictor and a fusion
strategy; it runs lazily when masks are asked for, so `point`/`count` never pay for it.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from videomolmo.errors import CheckpointError, ConfigError, VideoError, VideoMolmoError
from videomolmo.files import atomic_write_text, ensure_writable_dir

#: Longest query accepted: Molmo's prompts are one sentence; 10k characters is a pasted file,
#: not a referring expression, and would silently be cut by the model's context window.
MAX_QUERY_CHARS = 1000
#: Points closer than this fraction of the frame diagonal are the same point when counting.
DUPLICATE_POINT_FRACTION = 0.01

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


# --------------------------------------------------------------------------- validation


def check_query(query: Any) -> str:
    """Normalise a query (collapse whitespace) or raise `ConfigError` saying what is wrong."""
    if not isinstance(query, str):
        raise ConfigError(f"query must be text, got {type(query).__name__}")
    q = " ".join(query.split())
    if not q:
        raise ConfigError("query is empty: say what to point at, e.g. --query \"the dog\"")
    if len(q) > MAX_QUERY_CHARS:
        raise ConfigError(f"query is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
    if any(ord(c) < 32 for c in q):
        raise ConfigError("query contains control characters")
    return q


def check_params(k: Any, tau: Any, l: Any = 1) -> None:
    """Raise `ConfigError` unless k >= 1, 0 <= tau <= 1 and l >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer (anchor stride in frames), got {k!r}")
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ConfigError(f"tau must be a number in [0, 1], got {tau!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"tau must be in [0, 1] (IoU threshold of the fusion), got {tau!r}")
    if isinstance(l, bool) or not isinstance(l, (int, np.integer)) or l < 1:
        raise ConfigError(f"l must be a positive integer (context frames), got {l!r}")


@dataclass(frozen=True)
class PipelineConfig:
    """Inference settings (paper defaults: k=5 anchor stride, tau=0.7, l=4 context frames).

    `first_frame_only` is the Molmo+SAM2 baseline's pointing schedule: one anchor on frame 0 and
    masks propagated over the whole video (k = number of frames).
    """

    k: int = 5
    tau: float = 0.7
    l: int = 4
    mask_backend: str = "cpu"
    fusion: str = "bidirectional"
    batch_size: int = 4
    first_frame_only: bool = False

    def __post_init__(self) -> None:
        check_params(self.k, self.tau, self.l)
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")


def pipeline_preset(name: str) -> PipelineConfig:
    """A named inference setting: "videomolmo" (paper defaults) or "molmo-sam2" (the baseline)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown pipeline preset {name!r}; choose one of: {', '.join(PRESETS)}") from None


PRESETS: dict[str, PipelineConfig] = {
    "videomolmo": PipelineConfig(),
    # The paper's Molmo+SAM2 comparison: same weights, temporal module off, first-frame pointing.
    "molmo-sam2": PipelineConfig(first_frame_only=True),
}


def anchor_frames(num_frames: int, k: int, first_frame_only: bool = False) -> list[int]:
    """The frames stage 1 points on: every k-th frame from 0 (only frame 0 for the baseline)."""
    if num_frames <= 0:
        return []
    if first_frame_only:
        return [0]
    return list(range(0, num_frames, k))


def open_any_video(source: Any):
    """`videomolmo.video.open_video` over a file, folder, frame list or an already open `Video`."""
    from videomolmo.video import open_video

    video = open_video(source)
    if len(video) == 0:
        raise VideoError(f"{source}: the video has no frames")
    return video


def video_size(video) -> tuple[int, int]:
    """(H, W) of a `Video`, from its attributes or its first frame."""
    for hn, wn in (("height", "width"), ("h", "w")):
        h, w = getattr(video, hn, None), getattr(video, wn, None)
        if isinstance(h, int) and isinstance(w, int):
            return h, w
    f = video[0]
    return int(f.shape[0]), int(f.shape[1])


def video_fps(video, default: float = 24.0) -> float:
    fps = getattr(video, "fps", None)
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        return default
    return fps if fps > 0 else default


# --------------------------------------------------------------------------- pointers


class Pointer(ABC):
    """Stage 1: points for a query on given frames of a video."""

    name: str = "pointer"

    @abstractmethod
    def point(
        self, video, query: str, frames: Sequence[int], l: int = 4, progress: ProgressFn | None = None
    ) -> dict[int, np.ndarray]:
        """{frame index: (N, 2) float64 pixel (x, y)} for every index in `frames` (N may be 0)."""


class StaticPointer(Pointer):
    """Replays fixed points (tests, demos, externally produced points)."""

    name = "static"

    def __init__(self, points: Mapping[int, Any]):
        self._points = {int(i): np.asarray(p, dtype=np.float64).reshape(-1, 2) for i, p in points.items()}

    def point(self, video, query, frames, l=4, progress=None):
        return {i: self._points.get(i, np.zeros((0, 2))).copy() for i in frames}


def read_points_file(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """Read a `points.jsonl` (upstream format: one JSON object, frame index -> [[x, y], ...]).

    Bad files raise `ConfigError` naming the file and the problem."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: points file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{p}: not a JSON points file ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{p}: expected a JSON object mapping frame index to [[x, y], ...]")
    out: dict[int, np.ndarray] = {}
    for key, pts in data.items():
        try:
            i = int(key)
            arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise ConfigError(f"{p}: frame {key!r}: expected an integer frame index and [[x, y], ...]") from None
        if i < 0 or not np.isfinite(arr).all():
            raise ConfigError(f"{p}: frame {key!r}: negative index or non-finite coordinates")
        out[i] = arr
    return out


def interior_points(mask: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """One point per connected region of `mask`: its most interior pixel (distance-transform
    maximum), which always lies inside the region even for thin or concave shapes. Regions
    smaller than `min_fraction` of the largest are ignored as annotation specks."""
    import cv2

    m = np.asarray(mask, dtype=np.uint8)
    if not m.any():
        return np.zeros((0, 2))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = [i + 1 for i, a in enumerate(areas) if a >= min_fraction * areas.max()]
    dist = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    pts = []
    for lab in keep:
        d = np.where(labels == lab, dist, -1.0)
        y, x = np.unravel_index(int(np.argmax(d)), d.shape)
        pts.append((x + 0.5, y + 0.5))
    return np.asarray(pts, dtype=np.float64)


class OraclePointer(Pointer):
    """Points taken from ground truth: evaluates the mask stage alone (J&F with a perfect pointer).

    `gt_mask(i)` -> bool (H, W) union mask of frame i; with `object_masks(i)` -> one mask per
    referred object, each object gets one point (the most interior pixel of its largest region),
    so touching objects are not merged into one."""

    name = "oracle"

    def __init__(self, gt_mask: Callable[[int], np.ndarray],
                 object_masks: Callable[[int], Sequence[np.ndarray]] | None = None):
        self._gt = gt_mask
        self._objects = object_masks

    @classmethod
    def from_sample(cls, sample) -> "OraclePointer":
        """From a benchmark `Sample` (per-object masks when the reader provides them)."""
        return cls(sample.gt_mask, getattr(sample, "gt_object_masks", None))

    def _points(self, i: int) -> np.ndarray:
        if self._objects is None:
            return interior_points(self._gt(i))
        pts = []
        for m in self._objects(i):
            p = interior_points(m, min_fraction=1.0)  # the largest region only
            if len(p):
                pts.append(p[0])
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    def point(self, video, query, frames, l=4, progress=None):
        out = {}
        for n, i in enumerate(frames):
            out[i] = self._points(i)
            if progress:
                progress("pointing", n + 1, len(frames))
        return out


class ModelPointer(Pointer):
    """A VideoMolmo checkpoint: `videomolmo.model.point_video` on the anchor frames."""

    name = "model"

    def __init__(self, model, processor, batch_size: int = 4, temporal: bool = True):
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.temporal = temporal

    def point(self, video, query, frames, l=4, progress=None):
        from videomolmo import model as vm

        kwargs: dict[str, Any] = {"frames": list(frames), "l": l, "batch_size": self.batch_size}
        if not self.temporal:
            kwargs["temporal"] = False
        if progress is not None:
            kwargs["progress"] = lambda done, total: progress("pointing", done, total)
        out = _call_tolerant(vm.point_video, self.model, self.processor, video, query, **kwargs)
        return {int(i): np.asarray(out.get(i, np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2) for i in frames}


def _call_tolerant(fn, *args, **kwargs):
    """Call `fn` passing only the keyword arguments its signature accepts (the model API grows
    options over time; an older checkpoint loader must not break the pipeline)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(*args, **kwargs)
    return fn(*args, **{k: v for k, v in kwargs.items() if k in params})


# --------------------------------------------------------------------------- counting


def distinct_points(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Drop points within `DUPLICATE_POINT_FRACTION` of the diagonal of an earlier point."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    radius = DUPLICATE_POINT_FRACTION * float(np.hypot(width, height))
    kept: list[np.ndarray] = []
    for p in pts:
        if all(np.hypot(*(p - q)) > radius for q in kept):
            kept.append(p)
    return np.asarray(kept, dtype=np.float64).reshape(-1, 2)


def video_count(per_frame: Mapping[int, int]) -> int:
    """The video-level count: the most distinct points seen on any one sampled frame.

    Objects leave the view and get occluded, so a single frame under-counts; the maximum over
    the sampled frames is the number of distinct objects the model grounded at once."""
    return max(per_frame.values(), default=0)


# --------------------------------------------------------------------------- result


@dataclass
class PipelineResult:
    """Points, counts and (lazily computed) masks of one query on one video."""

    video: Any
    query: str
    points: dict[int, np.ndarray]
    config: PipelineConfig
    predictor_factory: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.video)

    @property
    def size(self) -> tuple[int, int]:
        return video_size(self.video)

    @property
    def fps(self) -> float:
        return video_fps(self.video)

    @property
    def sampled_frames(self) -> list[int]:
        return sorted(self.points)

    @property
    def counts(self) -> dict[int, int]:
        """Distinct points per sampled frame."""
        h, w = self.size
        return {i: len(distinct_points(p, w, h)) for i, p in sorted(self.points.items())}

    @property
    def count(self) -> int:
        """The video-level count (see `video_count`)."""
        return video_count(self.counts)

    def masks(self, progress: ProgressFn | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream `(frame index, bool (H, W) mask)` for every frame, in order.

        Runs stage 2 afresh on each call (nothing is cached), so memory stays flat in video
        length; write them with `save` or `write_masks` if you need them twice."""
        if self.predictor_factory is None:
            raise ConfigError("this result has no mask stage (it came from point-only inference)")
        yield from run_mask_stage(self.video, self.points, self.predictor_factory(), self.config, progress)

    def points_jsonl(self) -> str:
        """`points.jsonl` text in upstream VideoMolmo's format: one JSON object on one line mapping
        each sampled frame index (a string key, in frame order) to its list of [x, y] pixels,
        e.g. ``{"0": [[412.5, 210.0]], "5": [], ...}``. Counts go to `count.json`."""
        return json.dumps({str(int(i)): [[round(float(x), 2), round(float(y), 2)] for x, y in p]
                           for i, p in sorted(self.points.items())}) + "\n"

    def save(
        self,
        out_dir: str | os.PathLike,
        masks: bool = True,
        overlay: bool = True,
        progress: ProgressFn | None = None,
    ) -> dict[str, str]:
        """Write `masks/<frame>.png`, `overlay.mp4`, `points.jsonl` and `count.json` to `out_dir`.

        Nothing half-written is ever left looking complete: masks go to a hidden folder that is
        renamed to `masks/` at the end, the overlay to a temp file renamed when encoded, and
        `points.jsonl` / `count.json` are written last (their presence marks a finished run).
        Returns {name: path}."""
        import shutil

        out = ensure_writable_dir(out_dir)
        files: dict[str, str] = {}
        if masks or overlay:
            from videomolmo import render

            tmp_masks = out / ".masks.partial"
            shutil.rmtree(tmp_masks, ignore_errors=True)
            if masks:
                tmp_masks.mkdir()

            # Mask files are named after the input frames (a DAVIS folder keeps its names).
            names = getattr(self.video, "frame_names", None)

            def stream():
                for i, m in self.masks(progress):
                    if masks:
                        stem = Path(str(names[i])).stem if names is not None else f"{i:05d}"
                        write_mask_png(tmp_masks / f"{stem}.png", m)
                    yield render.OverlayFrame(self.video[i], i, m, self.points.get(i))

            try:
                if overlay:
                    render.render(stream(), video_path=out / "overlay.mp4", query=self.query, fps=self.fps,
                                  num_frames=self.num_frames)
                    files["overlay"] = str(out / "overlay.mp4")
                else:
                    for _ in stream():
                        pass
                if masks:
                    final = out / "masks"
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(tmp_masks, final)
                    files["masks"] = str(final)
            finally:
                shutil.rmtree(tmp_masks, ignore_errors=True)
        atomic_write_text(out / "points.jsonl", self.points_jsonl())
        files["points"] = str(out / "points.jsonl")
        atomic_write_text(out / "count.json", json.dumps(self.count_report(), indent=2) + "\n")
        files["count"] = str(out / "count.json")
        return files

    def write_masks(self, out_dir: str | os.PathLike, progress: ProgressFn | None = None) -> dict[str, str]:
        """Stream the masks to `out_dir/masks/<frame>.png` (plus points.jsonl and count.json)."""
        return self.save(out_dir, masks=True, overlay=False, progress=progress)

    def count_report(self) -> dict:
        return {
            "query": self.query,
            "count": self.count,
            "per_frame": {str(i): c for i, c in self.counts.items()},
            "sampled_frames": self.sampled_frames,
            "rule": "max over sampled frames of distinct points",
        }


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """A 0/255 PNG, written atomically (the DAVIS convention for a single object)."""
    from videomolmo.masks import write_mask

    write_mask(path, np.asarray(mask, dtype=bool))


# --------------------------------------------------------------------------- stage 2


def get_predictor(backend: str, sam2: str | os.PathLike | None = None, device: str = "cpu"):
    """A mask predictor by backend name (`cpu` needs nothing; `sam2` / `sam3` need a checkpoint
    dir, passed as `sam2` for backward compatibility: it is the generic --mask-checkpoint)."""
    from videomolmo.segmentation import registry

    kwargs: dict[str, Any] = {}
    if backend in registry.CHECKPOINT_BACKENDS:
        if sam2 is None:
            raise ConfigError(f"--mask-backend {backend} needs --mask-checkpoint DIR (a {backend} checkpoint folder)")
        kwargs["model_dir"] = str(sam2)
        kwargs["device"] = device
    return registry.get_predictor(backend, **kwargs)


def run_mask_stage(
    video, points: Mapping[int, np.ndarray], predictor, config: PipelineConfig, progress: ProgressFn | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Stage 2: points on anchor frames -> one bool mask per frame, streamed in frame order."""
    from videomolmo.segmentation.propagation import segment_video

    n = len(video)
    k = n if config.first_frame_only else config.k
    produced = segment_video(video, dict(points), predictor, k=k, tau=config.tau, strategy=config.fusion)
    for count, (i, m) in enumerate(produced, start=1):
        if progress is not None:
            progress("masks", count, n)
        yield int(i), np.asarray(m, dtype=bool)


# --------------------------------------------------------------------------- the pipeline


class Pipeline:
    """Pointer + mask stage with default settings; call it on (video, query)."""

    def __init__(
        self,
        pointer: Pointer,
        config: PipelineConfig | None = None,
        sam2: str | os.PathLike | None = None,
        device: str = "cpu",
        predictors: dict[str, Any] | None = None,
        mask_checkpoint: str | os.PathLike | None = None,
    ):
        self.pointer = pointer
        self.config = config or PipelineConfig()
        # `sam2` predates the sam3 backend; either names the --mask-checkpoint folder.
        self.sam2 = mask_checkpoint if mask_checkpoint is not None else sam2
        self.device = device
        # Shared between pipelines that differ only in the pointer (the oracle builds one per
        # sample), so a SAM2 checkpoint is loaded once per run.
        self._predictors: dict[str, Any] = predictors if predictors is not None else {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        baseline: bool = False,
        device: str = "cpu",
        sam2: str | os.PathLike | None = None,
        preset: str | None = None,
        mask_checkpoint: str | os.PathLike | None = None,
        pointer: str = "model",
        **config: Any,
    ) -> "Pipeline":
        """Load stage 1 from a preset name, a checkpoint folder, or (None) the bundled default.

        `baseline=True` is the paper's Molmo+SAM2 comparison: the same weights with the temporal
        module off, pointing on the first frame only (override with `first_frame_only=False`).
        `pointer="molmo2"` loads `model` (a local Molmo2 folder) as `Molmo2Pointer` instead."""
        if baseline:
            config.setdefault("first_frame_only", True)
        cfg = PipelineConfig(**config)
        stage1: Pointer
        if pointer == "molmo2":
            from videomolmo.model.molmo2 import Molmo2Pointer

            if model is None:
                raise ConfigError("--pointer molmo2 needs --model DIR (a local Molmo2 checkpoint folder)")
            stage1 = Molmo2Pointer.from_pretrained(model, device=device)
        elif pointer == "model":
            mdl, processor = load_model(model, device=device, preset=preset)
            stage1 = ModelPointer(mdl, processor, batch_size=cfg.batch_size, temporal=not baseline)
        else:
            raise ConfigError(f"unknown pointer {pointer!r}; choose one of: model, molmo2")
        return cls(stage1, cfg, sam2=sam2, device=device, mask_checkpoint=mask_checkpoint)

    def with_pointer(self, pointer: Pointer) -> "Pipeline":
        """The same settings and mask predictors with another stage-1 pointer."""
        return Pipeline(pointer, self.config, self.sam2, self.device, self._predictors)

    def _predictor(self, backend: str):
        if backend not in self._predictors:
            self._predictors[backend] = get_predictor(backend, self.sam2, self.device)
        return self._predictors[backend]

    def _config(self, **overrides: Any) -> PipelineConfig:
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self.config, **changes) if changes else self.config

    def point(
        self,
        video,
        query: str,
        k: int | None = None,
        l: int | None = None,
        progress: ProgressFn | None = None,
    ) -> PipelineResult:
        """Stage 1 only: points (and counts) on the anchor frames; `masks()` is unavailable."""
        cfg = self._config(k=k, l=l)
        q = check_query(query)
        v = open_any_video(video)
        frames = anchor_frames(len(v), cfg.k, cfg.first_frame_only)
        pts = self.pointer.point(v, q, frames, l=cfg.l, progress=progress)
        return PipelineResult(v, q, pts, cfg, None)

    def __call__(
        self,
        video,
        query: str,
        k: int | None = None,
        tau: float | None = None,
        l: int | None = None,
        mask_backend: str | None = None,
        fusion: str | None = None,
        progress: ProgressFn | None = None,
    ) -> PipelineResult:
        """Points on every k-th frame now; masks for every frame lazily via `result.masks()`."""
        cfg = self._config(k=k, tau=tau, l=l, mask_backend=mask_backend, fusion=fusion)
        from videomolmo.fusion import get_strategy

        get_strategy(cfg.fusion)  # fail before the (slow) pointing, not after
        res = self.point(video, query, k=cfg.k, l=cfg.l, progress=progress)
        backend = cfg.mask_backend
        predictor = self._predictor(backend)
        res.config = cfg
        res.predictor_factory = lambda: predictor
        return res


def load_model(model: str | os.PathLike | None, device: str = "cpu", preset: str | None = None):
    """(model, processor) for stage 1.

    - None, "default" or "bundled": the bundled CPU model shipped in the package;
    - a folder written by `save_pretrained` (config.json + safetensors): loaded as is;
    - a folder of upstream Molmo / VideoMolmo safetensors shards, with `preset` naming its
      architecture (e.g. "videomolmo-7b", "molmo-7b-d"; see `videomolmo info --preset`).
    A preset name alone is refused: presets describe an architecture, the weights must come
    from a folder (nothing is downloaded).
    """
    if model is None or str(model) in ("default", "bundled"):
        return _bundled(device)
    from videomolmo.model import ModelConfig
    from videomolmo.model import checkpoint as ckpt

    p = Path(model)
    if not p.exists():
        try:
            ModelConfig.from_name(str(model))
        except VideoMolmoError:
            raise CheckpointError(f"{model}: no such checkpoint directory (and not a model preset)") from None
        raise CheckpointError(
            f"{model} is a model preset (an architecture); give its weights too: --model DIR --preset {model}"
        )
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a checkpoint directory (expected a folder with config.json and *.safetensors)")
    if not any(p.glob("*.safetensors")):
        raise CheckpointError(f"{p}: not a checkpoint directory (no *.safetensors weights in it)")
    if preset is not None:
        mdl = ckpt.load_molmo_checkpoint(p, ModelConfig.from_name(preset), device=device)
    else:
        mdl = ckpt.from_pretrained(p, device=device)
    processor = getattr(mdl, "processor", None)
    if processor is None:
        raise CheckpointError(f"{p}: the checkpoint has no tokenizer files (tokenizer.json) to build its processor")
    return mdl, processor


_BUNDLED: dict[str, tuple[Any, Any]] = {}


def _bundled(device: str) -> tuple[Any, Any]:
    """The bundled model, loaded once per process and device (it is read-only at inference:
    the baseline switches the temporal module off per call, never on the model)."""
    if device not in _BUNDLED:
        try:
            from videomolmo.bundled import load_default
        except ImportError:
            raise CheckpointError(
                "no bundled default model in this install; pass --model DIR (a VideoMolmo checkpoint) "
                "or use --pointer oracle for evaluation"
            ) from None
        _BUNDLED[device] = _as_pair(_call_tolerant(load_default, device=device))
    return _BUNDLED[device]


def _as_pair(obj) -> tuple[Any, Any]:
    if isinstance(obj, tuple) and len(obj) == 2:
        return obj
    processor = getattr(obj, "processor", None)
    return obj, processor
