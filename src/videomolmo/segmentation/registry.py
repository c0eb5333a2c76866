"""Build a mask predictor by name: `get_predictor("cpu")`, `get_predictor("sam2", model_dir=...)`."""

from __future__ import annotations

from typing import Any

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.segmentation.predictor import MaskPredictor

__all__ = ["BACKENDS", "get_predictor"]

BACKENDS = ("cpu", "sam2", "sam3")
#: Backends that load a checkpoint folder (`model_dir`, the CLI's --mask-checkpoint DIR).
CHECKPOINT_BACKENDS = ("sam2", "sam3")


def get_predictor(name: str = "cpu", **kwargs: Any) -> MaskPredictor:
    """A `MaskPredictor` for backend `name`.

    cpu:  `CpuPredictor(config=None | preset name | CpuConfig, **CpuConfig overrides)`.
    sam2: `Sam2Predictor.from_pretrained(model_dir, device="cpu", dtype=None)`; torch and
          transformers are imported only here. A missing or incomplete `model_dir` raises
          `CheckpointError`.
    sam3: `Sam3TrackerPredictor.from_pretrained(model_dir, ...)`, the same contract as sam2.
    """
    if name == "cpu":
        from videomolmo.segmentation.cpu import CpuPredictor

        return CpuPredictor(**kwargs)
    if name in CHECKPOINT_BACKENDS:
        model_dir = kwargs.pop("model_dir", None)
        if model_dir is None:
            raise CheckpointError(f"the {name} backend needs a checkpoint directory (--mask-checkpoint DIR)")
        if name == "sam2":
            from videomolmo.segmentation.sam2 import Sam2Predictor as cls
        else:
            from videomolmo.segmentation.sam3 import Sam3TrackerPredictor as cls

        return cls.from_pretrained(model_dir, **kwargs)
    raise ConfigError(f"unknown mask backend {name!r}; choose one of: {', '.join(BACKENDS)}")
