"""VideoMolmo end to end: pointing (stage 1) + masks (stage 2) + counts, in one object.

    >>> from videomolmo.pipeline import Pipeline
    >>> pipe = Pipeline.from_pretrained()                 # bundled CPU default; or a checkpoint dir
    >>> result = pipe("clip.mp4", "the dog chasing the ball", k=5, tau=0.7)
    >>> result.points[0]                                  # (N, 2) pixel (x, y) on frame 0
    >>> result.count                                      # video-level count
    >>> for i, mask in result.masks():                    # streamed, flat memory
    ...     ...
    >>> result.save("out/")                               # points.jsonl, masks/, overlay.mp4

Stage 1 is a *pointer* (`videomolmo.pointers`, a registry: model, oracle, static, ...); stage 2 is
`videomolmo.segmentation.propagation.segment_video` with a mask backend from
`videomolmo.segmentation.registry` and a fusion strategy from `videomolmo.fusion`. Stage 2 runs
lazily when masks are asked for, so `point`/`count` never pay for it. Settings and their
defaults are `videomolmo.settings.PipelineConfig`.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from videomolmo import render
from videomolmo.counting import distinct_points, video_count
from videomolmo.errors import ConfigError
from videomolmo.files import atomic_write_text, ensure_writable_dir
from videomolmo.fusion import get_strategy
from videomolmo.masks import write_mask
from videomolmo.notices import (
    BUNDLED_NOTICE,
    BundledModelWarning,
    NothingFoundWarning,
    nothing_found,
    uses_bundled_model,
)
from videomolmo.pointers import Pointer, ProgressFn, build_pointer
from videomolmo.segmentation import registry
from videomolmo.segmentation.propagation import segment_video
from videomolmo.settings import PipelineConfig, anchor_frames, check_query
from videomolmo.video import open_video

__all__ = ["Pipeline", "PipelineResult", "PipelineConfig", "run_mask_stage"]


# --------------------------------------------------------------------------- result


@dataclass
class PipelineResult:
    """Points, counts and (lazily computed) masks of one query on one video."""

    video: Any
    query: str
    points: dict[int, np.ndarray]
    config: PipelineConfig
    predictor_factory: Callable[[], Any] | None = field(default=None, repr=False)
    #: {frame: (N,) confidence in 0..1 of each point}, or None when the pointer has no scores.
    scores: dict[int, np.ndarray] | None = field(default=None, repr=False)
    #: One-line notes a person should read with the result (bundled model, nothing found).
    notes: list[str] = field(default_factory=list)
    #: {frame: the mask backend's confidence in 0..1}, filled as `masks()` streams (one float
    #: per frame; empty until then, and for backends that give no score).
    mask_scores: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def found(self) -> bool:
        """False when no sampled frame got a point: the query was not found at all."""
        return any(len(p) for p in self.points.values())

    @property
    def num_frames(self) -> int:
        return len(self.video)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the video's frames."""
        return int(self.video.height), int(self.video.width)

    @property
    def fps(self) -> float:
        return float(self.video.fps)

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
        yield from run_mask_stage(self.video, self.points, self.predictor_factory(), self.config, progress,
                                  on_score=self.mask_scores.__setitem__)

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
        gt_mask: Callable[[int], np.ndarray] | None = None,
        sheet: bool = False,
    ) -> dict[str, str]:
        """Write `masks/<frame>.png`, `overlay.mp4`, `points.jsonl` and `count.json` to `out_dir`.

        `gt_mask(i)`, when the truth is known (demo, benchmarks), is drawn as a white outline on
        the overlay; `sheet=True` adds `overlay.png`, a contact sheet of 8 frames with a legend.

        Nothing half-written is ever left looking complete: masks go to a hidden folder that is
        renamed to `masks/` at the end, the overlay to a temp file renamed when encoded, and
        `points.jsonl` / `count.json` are written last (their presence marks a finished run).
        Returns {name: path}."""
        import shutil

        out = ensure_writable_dir(out_dir)
        files: dict[str, str] = {}
        if masks or overlay:
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
                    yield render.OverlayFrame(self.video[i], i, m, self.points.get(i),
                                              None if gt_mask is None else gt_mask(i))

            try:
                if overlay:
                    render.render(stream(), video_path=out / "overlay.mp4", query=self.query, fps=self.fps,
                                  num_frames=self.num_frames, sheet_path=out / "overlay.png" if sheet else None)
                    files["overlay"] = str(out / "overlay.mp4")
                    if sheet:
                        files["sheet"] = str(out / "overlay.png")
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
        report = {
            "query": self.query,
            "found": self.found,
            "count": self.count,
            "per_frame": {str(i): c for i, c in self.counts.items()},
            "sampled_frames": self.sampled_frames,
            "rule": "max over sampled frames of distinct points",
        }
        if self.scores is not None:
            report["point_scores"] = {str(i): [round(float(s), 4) for s in self.scores.get(i, [])]
                                      for i in self.sampled_frames}
        if self.mask_scores:
            report["mask_scores"] = {str(i): round(float(s), 4) for i, s in sorted(self.mask_scores.items())}
            report["mean_mask_score"] = round(float(np.mean(list(self.mask_scores.values()))), 4)
        if self.notes:
            report["notes"] = list(self.notes)
        return report


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """A 0/255 PNG, written atomically (the DAVIS convention for a single object)."""
    write_mask(path, np.asarray(mask, dtype=bool))


# --------------------------------------------------------------------------- stage 2


def run_mask_stage(
    video, points: Mapping[int, np.ndarray], predictor, config: PipelineConfig, progress: ProgressFn | None = None,
    on_score: Callable[[int, float], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Stage 2: points on anchor frames -> one bool mask per frame, streamed in frame order;
    `on_score(frame, confidence)` gets the backend's per-frame confidence where it has one."""
    n = len(video)
    k = n if config.first_frame_only else config.k
    produced = segment_video(video, dict(points), predictor, k=k, tau=config.tau, strategy=config.fusion,
                             on_score=on_score)
    for count, (i, m) in enumerate(produced, start=1):
        if progress is not None:
            progress("masks", count, n)
        yield int(i), np.asarray(m, dtype=bool)


# --------------------------------------------------------------------------- the pipeline


class Pipeline:
    """Pointer + mask stage with default settings; call it on (video, query).

    `mask_checkpoint` is the checkpoint folder of backends that need one (sam2, ...)."""

    def __init__(
        self,
        pointer: Pointer,
        config: PipelineConfig | None = None,
        mask_checkpoint: str | os.PathLike | None = None,
        device: str = "cpu",
        predictors: dict[str, Any] | None = None,
    ):
        self.pointer = pointer
        self.config = config or PipelineConfig()
        self.mask_checkpoint = mask_checkpoint
        self.device = device
        # Shared between pipelines that differ only in the pointer (the oracle binds one per
        # sample), so a SAM2 checkpoint is loaded once per run.
        self._predictors: dict[str, Any] = predictors if predictors is not None else {}
        #: True when the input is synthetic sprite video (demo, synthetic benchmark): the bundled
        #: model's own domain, so its out-of-domain notice is not due.
        self.synthetic_input = False

    def notices(self) -> list[str]:
        """Notes due before running (the bundled model on input outside its domain)."""
        return [BUNDLED_NOTICE] if uses_bundled_model(self.pointer) and not self.synthetic_input else []

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        pointer: str = "model",
        baseline: bool = False,
        device: str = "cpu",
        mask_checkpoint: str | os.PathLike | None = None,
        preset: str | None = None,
        context: str = "normal",
        **config: Any,
    ) -> "Pipeline":
        """Stage 1 from a checkpoint folder (`preset` names the layout of upstream shards), or
        (None) the bundled default; `pointer` picks another registered pointer family.

        `baseline=True` is the paper's Molmo+SAM2 comparison: the same weights with the temporal
        module off, pointing on the first frame only (override with `first_frame_only=False`).
        `context` is the inference-time context ablation of the model pointer."""
        if baseline:
            config.setdefault("first_frame_only", True)
        cfg = PipelineConfig(**config)
        get_strategy(cfg.fusion)
        registry.check_backend(cfg.mask_backend, mask_checkpoint)
        ptr = build_pointer(pointer, model=model, preset=preset, device=device, batch_size=cfg.batch_size,
                            baseline=baseline, **({"context": context} if context != "normal" else {}))
        return cls(ptr, cfg, mask_checkpoint=mask_checkpoint, device=device)

    def with_pointer(self, pointer: Pointer) -> "Pipeline":
        """The same settings and mask predictors with another stage-1 pointer."""
        pipe = Pipeline(pointer, self.config, self.mask_checkpoint, self.device, self._predictors)
        pipe.synthetic_input = self.synthetic_input
        return pipe

    def for_sample(self, sample: Any) -> "Pipeline":
        """The pipeline for one benchmark sample (binds pointers that read its ground truth)."""
        return self.with_pointer(self.pointer.bind(sample)) if self.pointer.needs_sample else self

    def _predictor(self, backend: str):
        if backend not in self._predictors:
            self._predictors[backend] = registry.get_predictor(backend, checkpoint=self.mask_checkpoint,
                                                               device=self.device)
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
        v = open_video(video)
        frames = anchor_frames(len(v), cfg.k, cfg.first_frame_only)
        if hasattr(self.pointer, "point_scored"):
            pts, scores = self.pointer.point_scored(v, q, frames, l=cfg.l, progress=progress)
        else:  # a duck-typed pointer (only `point`): no confidences
            pts, scores = self.pointer.point(v, q, frames, l=cfg.l, progress=progress), None
        res = PipelineResult(v, q, pts, cfg, None, scores=scores)

        # Also as Python warnings, so API users see them without reading `notes`.
        for note in self.notices():
            res.notes.append(note)
            warnings.warn(note, BundledModelWarning, stacklevel=2)
        if not res.found:
            res.notes.append(nothing_found(q, len(frames)))
            warnings.warn(res.notes[-1], NothingFoundWarning, stacklevel=2)
        return res

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
        get_strategy(cfg.fusion)  # fail before the (slow) pointing, not after
        predictor = self._predictor(cfg.mask_backend)
        res = self.point(video, query, k=cfg.k, l=cfg.l, progress=progress)
        res.config = cfg
        res.predictor_factory = lambda: predictor
        return res
