"""Stage 1 by name: pointers map (video, query, anchor frames) to pixel points per frame.

    from videomolmo.pointers import build_pointer
    pointer = build_pointer("model", model="/ckpt/VideoMolmo", preset="videomolmo-7b", device="cuda")
    points = pointer.point(video, "the dog", frames=[0, 5, 10])     # {frame: (N, 2) pixel (x, y)}

Adding a pointer (another model family) is one class in a module imported at the bottom of this
file:

    @register_pointer("center")
    class CenterPointer(Pointer):
        @classmethod
        def create(cls, **options):          # the CLI's options: model, preset, device, ...
            return cls()

        def point(self, video, query, frames, l=None, progress=None):
            h, w = video[0].shape[:2]
            return {i: np.array([[w / 2, h / 2]]) for i in frames}

`create(**options)` receives every pointer option the CLI and the Python API know (`model`,
`preset`, `device`, `batch_size`, `baseline`, `points`) and takes what it needs. A pointer that
needs the benchmark sample (the ground-truth oracle) sets `needs_sample = True` and returns a
bound copy from `bind(sample)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np

from videomolmo.registry import ClassRegistry

__all__ = ["POINTERS", "Pointer", "register_pointer", "pointer_names", "pointer_class", "build_pointer",
           "ProgressFn"]

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)

class Pointer(ABC):
    """Stage 1: points for a query on given frames of a video."""

    name: str = "pointer"
    #: True when points come from a benchmark sample (`bind(sample)` before use).
    needs_sample: bool = False

    @classmethod
    def create(cls, **options: Any) -> "Pointer":
        """Build from the CLI / API options (unused ones are ignored)."""
        return cls()

    def bind(self, sample: Any) -> "Pointer":
        """The pointer for one benchmark sample; most pointers do not depend on it."""
        return self

    @abstractmethod
    def point(self, video, query: str, frames: Sequence[int], l: int | None = None,
              progress: ProgressFn | None = None) -> dict[int, np.ndarray]:
        """{frame index: (N, 2) float64 pixel (x, y)} for every index in `frames` (N may be 0).
        `l` is the number of context frames (None: the model's own)."""

    def point_scored(self, video, query: str, frames: Sequence[int], l: int | None = None,
                     progress: ProgressFn | None = None) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray] | None]:
        """`point` plus each point's confidence in 0..1 ({frame: (N,)}), or None when this
        pointer has no notion of confidence (given points, ground truth)."""
        return self.point(video, query, frames, l=l, progress=progress), None


POINTERS = ClassRegistry("pointer", Pointer)
register_pointer = POINTERS.register
pointer_names = POINTERS.names
pointer_class = POINTERS.lookup


def build_pointer(name: str, **options: Any) -> Pointer:
    return pointer_class(name).create(**options)


# Pointers register themselves on import; one line each.
from videomolmo.pointers import model as _model  # noqa: E402,F401
from videomolmo.pointers import oracle as _oracle  # noqa: E402,F401
from videomolmo.pointers import static as _static  # noqa: E402,F401
from videomolmo.pointers import molmo2 as _molmo2  # noqa: E402,F401
