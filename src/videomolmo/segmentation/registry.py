"""Build a mask predictor by name: `get_predictor("cpu")`, `get_predictor("sam2", model_dir=...)`."""

from __future__ import annotations

from typing import Any

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.segmentation.predictor import MaskPredictor

__all__ = ["BACKENDS", "get_predictor"]

BACKENDS = ("cpu", "sam2")


def get_predictor(name: str = "cpu", **kwargs: Any) -> MaskPredictor:
    """A `MaskPredictor` for backend `name`.

    cpu:  `CpuPredictor(config=None | preset name | CpuConfig, **CpuConfig overrides)`.
    sam2: `Sam2Predictor.from_pretrained(model_dir, device="cpu", dtype=None)`; torch and
          transformers are imported only here. A missing or incomplete `model_dir` raises
          `CheckpointError`.
    """
    if name == "cpu":
        from videomolmo.segmentation.cpu import CpuPredictor

        return CpuPredictor(**kwargs)
    if name == "sam2":
        model_dir = kwargs.pop("model_dir", None)
        if model_dir is None:
            raise CheckpointError("the sam2 backend needs a SAM2 checkpoint directory (--sam2 DIR)")
        from videomolmo.segmentation.sam2 import Sam2Predictor

        return Sam2Predictor.from_pretrained(model_dir, **kwargs)
    raise ConfigError(f"unknown mask backend {name!r}; choose one of: {', '.join(BACKENDS)}")
