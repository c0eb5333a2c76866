"""A VideoMolmo checkpoint as the pointer: `videomolmo.model.point_video` on the anchor frames."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from videomolmo.bundled import load_default
from videomolmo.errors import CheckpointError, VideoMolmoError
from videomolmo.pointers import Pointer, register_pointer
from videomolmo.settings import check_device


@register_pointer("model")
class ModelPointer(Pointer):
    """A VideoMolmo checkpoint (default: the bundled CPU model) points on the anchor frames.

    `temporal=False` runs the model without its temporal module (the Molmo+SAM2 baseline);
    `context` is the inference-time context ablation (`point_video`): for "shuffle" the caller
    sets `context_video` to another clip before each video. `point_decode` reads the points
    from the text or from the model's patch-selection head (`model/point_head.py`; None: the
    model's own way)."""

    def __init__(self, model, processor, batch_size: int = 4, temporal: bool = True,
                 context: str = "normal", point_decode: str | None = None):
        from videomolmo.model.point_head import check_point_decode
        from videomolmo.model.pointing import check_context_mode

        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.temporal = temporal
        self.context = check_context_mode(context)
        self.point_decode = None if point_decode is None else check_point_decode(point_decode, model.config)
        self.context_video = None

    @classmethod
    def create(cls, model: str | os.PathLike | None = None, preset: str | None = None, device: str = "cpu",
               batch_size: int = 4, baseline: bool = False, context: str = "normal",
               point_decode: str | None = None, **options: Any) -> "ModelPointer":
        mdl, processor = load_model(model, device=device, preset=preset)
        return cls(mdl, processor, batch_size=batch_size, temporal=not baseline, context=context,
                   point_decode=point_decode)

    @property
    def is_bundled(self) -> bool:
        return any(self.model is m for m, _ in _BUNDLED.values())

    def point(self, video, query, frames, l=None, progress=None):
        return self.point_scored(video, query, frames, l=l, progress=progress)[0]

    def point_scored(self, video, query, frames, l=None, progress=None):
        from videomolmo.model import point_video

        report = None if progress is None else (lambda done, total: progress("pointing", done, total))
        ctx = {} if self.context == "normal" else {"context": self.context, "context_video": self.context_video}
        out = point_video(self.model, self.processor, video, query, frames=list(frames), l=l,
                          batch_size=self.batch_size, temporal=self.temporal, progress=report,
                          point_decode=self.point_decode, **ctx)
        out = {fp.frame_idx: fp for fp in out}
        points, scores = {}, {}
        for i in frames:
            fp = out.get(int(i))
            points[int(i)] = (np.zeros((0, 2)) if fp is None else np.asarray(fp.points_px, np.float64)).reshape(-1, 2)
            scores[int(i)] = np.zeros(0) if fp is None else np.asarray(fp.scores, np.float64).reshape(-1)
        return points, scores


def load_model(model: str | os.PathLike | None, device: str = "cpu", preset: str | None = None):
    """(model, processor) for stage 1.

    - None, "default" or "bundled": the bundled CPU model shipped in the package;
    - a folder written by `save_pretrained` (config.json + safetensors): loaded as is;
    - a folder of upstream Molmo / VideoMolmo safetensors shards, with `preset` naming its
      architecture (e.g. "videomolmo-7b", "molmo-7b-d"; see `videomolmo info --preset`).
    A preset name alone is refused: presets describe an architecture, the weights must come
    from a folder (nothing is downloaded).
    """
    check_device(device)
    if model is None or str(model) in ("default", "bundled"):
        return _bundled(device)
    from videomolmo.model import ModelConfig
    from videomolmo.model import checkpoint as ckpt

    p = check_model_source(model)
    if preset is not None:
        mdl = ckpt.load_molmo_checkpoint(p, ModelConfig.from_name(preset), device=device)
    else:
        mdl = ckpt.from_pretrained(p, device=device)
    processor = getattr(mdl, "processor", None)
    if processor is None:
        raise CheckpointError(f"{p}: the checkpoint has no tokenizer files (tokenizer.json) to build its processor")
    return mdl, processor


def check_model_source(model: str | os.PathLike | None) -> Path | None:
    """The checks on `--model` that need no loading (a folder with weights, not a bare preset
    name); None for the bundled model. Commands call it before announcing a slow load."""
    if model is None or str(model) in ("default", "bundled"):
        return None
    from videomolmo.model import ModelConfig

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
    return p


def model_config_of(model: str | os.PathLike | None, preset: str | None = None):
    """The `ModelConfig` that `load_model(model, preset=preset)` would build, read without
    loading any weights (for checks before slow work)."""
    from videomolmo.bundled import bundled_info
    from videomolmo.model import ModelConfig
    from videomolmo.model.checkpoint import read_config

    p = check_model_source(model)
    if p is None:
        return ModelConfig.from_dict(bundled_info()["model"])
    return ModelConfig.from_name(preset) if preset is not None else read_config(p)


_BUNDLED: dict[str, tuple[Any, Any]] = {}


def _bundled(device: str) -> tuple[Any, Any]:
    """The bundled model, loaded once per process and device (it is read-only at inference:
    the baseline switches the temporal module off per call, never on the model)."""
    if device not in _BUNDLED:
        _BUNDLED[device] = load_default(device=device)
    return _BUNDLED[device]
