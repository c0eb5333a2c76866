"""Mask backends by name: the registry every command, the pipeline and the evaluator read.

    get_predictor("cpu")                                    # weight-free OpenCV backend
    get_predictor("sam2", checkpoint="/ckpt/sam2.1-hiera-large", device="cuda")

Adding a backend is one module that ends with one call, imported at the bottom of this file:

    register_backend("disk", lambda checkpoint=None, device="cpu", **options: DiskPredictor(),
                     description="a fixed disk around the points")

The factory takes `checkpoint` (a folder, or None), `device` and backend-specific `options`, and
returns a `MaskPredictor`. With `needs_checkpoint=True` a missing folder is refused up front
(`check_backend`), before any slow work; `check_checkpoint(path)` may look inside it too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.segmentation.predictor import MaskPredictor

__all__ = ["BACKENDS", "Backend", "register_backend", "backend_names", "get_backend", "check_backend",
           "get_predictor"]


@dataclass(frozen=True)
class Backend:
    name: str
    factory: Callable[..., MaskPredictor]
    description: str = ""
    needs_checkpoint: bool = False
    check_checkpoint: Callable[[Path], Any] | None = None


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[..., MaskPredictor], *, description: str = "",
                     needs_checkpoint: bool = False,
                     check_checkpoint: Callable[[Path], Any] | None = None) -> Backend:
    """Make `factory(checkpoint=None, device="cpu", **options)` the mask backend called `name`."""
    backend = Backend(name, factory, description, needs_checkpoint, check_checkpoint)
    BACKENDS[name] = backend
    return backend


def backend_names() -> list[str]:
    return sorted(BACKENDS)


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown mask backend {name!r}; registered: {', '.join(backend_names())}") from None


def check_backend(name: str, checkpoint: str | os.PathLike | None = None) -> Backend:
    """Refuse, in one line, an unknown backend or a checkpoint it needs and does not have."""
    backend = get_backend(name)
    if checkpoint is None:
        if backend.needs_checkpoint:
            raise CheckpointError(f"the {name} mask backend needs its checkpoint folder: --mask-checkpoint DIR")
        return backend
    path = Path(checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"{path}: {name} checkpoint folder does not exist")
    if backend.check_checkpoint is not None:
        backend.check_checkpoint(path)
    return backend


def get_predictor(name: str = "cpu", checkpoint: str | os.PathLike | None = None, device: str = "cpu",
                  **options: Any) -> MaskPredictor:
    """A `MaskPredictor` for backend `name` (`model_dir=` is accepted for `checkpoint=`)."""
    if checkpoint is None:
        checkpoint = options.pop("model_dir", None)
    backend = check_backend(name, checkpoint)
    return backend.factory(checkpoint=None if checkpoint is None else str(checkpoint), device=device, **options)


# Backends register themselves on import; one line each.
from videomolmo.segmentation import cpu as _cpu  # noqa: E402,F401
from videomolmo.segmentation import sam2 as _sam2  # noqa: E402,F401
from videomolmo.segmentation import sam3 as _sam3  # noqa: E402,F401
