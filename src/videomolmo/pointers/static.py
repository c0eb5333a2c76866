"""Replays fixed points (tests, demos, points produced elsewhere: `track --points FILE`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from videomolmo.errors import ConfigError
from videomolmo.pointers import Pointer, register_pointer


@register_pointer("static")
class StaticPointer(Pointer):
    """Replays given points (`track --points FILE`)."""

    def __init__(self, points: Mapping[int, Any]):
        self._points = {int(i): np.asarray(p, dtype=np.float64).reshape(-1, 2) for i, p in points.items()}

    @classmethod
    def create(cls, points: Mapping[int, Any] | None = None, **options: Any) -> "StaticPointer":
        if points is None:
            raise ConfigError("the static pointer replays given points: pass --points FILE")
        return cls(points)

    def point(self, video, query, frames, l=None, progress=None):
        return {i: self._points.get(i, np.zeros((0, 2))).copy() for i in frames}
