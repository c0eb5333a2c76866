"""The inference settings, their defaults and their checks: the one place k, tau and l live.

`PipelineConfig()` holds the paper's defaults (k=5 anchor stride, tau=0.7 fusion threshold, l =
the model's context length, 4 for every shipped model). The CLI options, the evaluator, the web
demo, the demo and the Python API all take their defaults from it; propagation and fusion take
required arguments. Light on purpose: importing it pulls in neither torch nor OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from videomolmo.errors import ConfigError

__all__ = ["PipelineConfig", "DEFAULTS", "check_params", "check_query", "anchor_frames", "check_device",
           "MAX_QUERY_CHARS"]

#: Longest query accepted: Molmo's prompts are one sentence; 10k characters is a pasted file,
#: not a referring expression, and would silently be cut by the model's context window.
MAX_QUERY_CHARS = 1000


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def check_params(k: Any, tau: Any, l: Any = None) -> None:
    """Raise `ConfigError` unless k >= 1, 0 <= tau <= 1 and l is None or >= 1."""
    if not _positive_int(k):
        raise ConfigError(f"k must be a positive integer (anchor stride in frames), got {k!r}")
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ConfigError(f"tau must be a number in [0, 1], got {tau!r}") from None
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"tau must be in [0, 1] (IoU threshold of the fusion), got {tau!r}")
    if l is not None and not _positive_int(l):
        raise ConfigError(f"l must be a positive integer (context frames), got {l!r}")


def check_query(query: Any) -> str:
    """Normalise a query (collapse whitespace) or raise `ConfigError` saying what is wrong."""
    if not isinstance(query, str):
        raise ConfigError(f"the query must be text, got {type(query).__name__}")
    q = " ".join(query.split())
    if not q:
        raise ConfigError("the query is empty: say what to point at, e.g. \"the dog\"")
    if len(q) > MAX_QUERY_CHARS:
        raise ConfigError(f"the query is {len(q)} characters long; the limit is {MAX_QUERY_CHARS}")
    if any(ord(c) < 32 for c in q):
        raise ConfigError("the query contains control characters")
    return q


def anchor_frames(num_frames: int, k: int, first_frame_only: bool = False) -> list[int]:
    """The frames stage 1 points on: every k-th frame from 0 (only frame 0 for the baseline)."""
    if not _positive_int(k):
        raise ConfigError(f"k must be a positive integer (anchor stride in frames), got {k!r}")
    if num_frames <= 0:
        return []
    return [0] if first_frame_only else list(range(0, num_frames, int(k)))


def check_device(device: str) -> str:
    """Refuse, in one line, a torch device this machine does not have (before any model loads)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: this torch build or machine has no CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: unsupported device type {dev.type!r}")
    return device


@dataclass(frozen=True)
class PipelineConfig:
    """Inference settings.

    k: anchor stride (frames 0, k, 2k, ... are pointed on); tau: the fusion's IoU threshold;
    l: context frames of the temporal module (None: the model's own `context_frames`);
    `first_frame_only` is the Molmo+SAM2 baseline's schedule: one anchor on frame 0 and masks
    propagated over the whole video.
    """

    k: int = 5
    tau: float = 0.7
    l: int | None = None
    mask_backend: str = "cpu"
    fusion: str = "bidirectional"
    batch_size: int = 4
    first_frame_only: bool = False

    def __post_init__(self) -> None:
        check_params(self.k, self.tau, self.l)
        if not _positive_int(self.batch_size):
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size!r}")

    @classmethod
    def field_default(cls, name: str) -> Any:
        return next(f.default for f in fields(cls) if f.name == name)


DEFAULTS = PipelineConfig()
