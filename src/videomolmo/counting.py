"""Counts from points: distinct points per frame, and the video-level count."""

from __future__ import annotations

from typing import Mapping

import numpy as np

#: Points closer than this fraction of the frame diagonal are the same point when counting.
DUPLICATE_POINT_FRACTION = 0.01


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
