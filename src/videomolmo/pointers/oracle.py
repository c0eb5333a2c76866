"""Points taken from ground truth: evaluates the mask stage alone (J&F with a perfect pointer)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np

from videomolmo.errors import ConfigError
from videomolmo.pointers import Pointer, register_pointer


def interior_points(mask: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """One point per connected region of `mask`: its most interior pixel (distance-transform
    maximum), which always lies inside the region even for thin or concave shapes. Regions
    smaller than `min_fraction` of the largest are ignored as annotation specks."""
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


@register_pointer("oracle")
class OraclePointer(Pointer):
    """Points from the benchmark's ground-truth masks (evaluates the mask stage alone).

    `gt_mask(i)` -> bool (H, W) union mask of frame i; with `object_masks(i)` -> one mask per
    referred object, each object gets one point (the most interior pixel of its largest region),
    so touching objects are not merged into one. Unbound (from `create`) it has no ground truth
    and must be `bind`-ed to a benchmark sample."""

    needs_sample = True

    def __init__(self, gt_mask: Callable[[int], np.ndarray] | None = None,
                 object_masks: Callable[[int], Sequence[np.ndarray]] | None = None):
        self._gt = gt_mask
        self._objects = object_masks

    @classmethod
    def from_sample(cls, sample: Any) -> "OraclePointer":
        """From a benchmark `Sample` (per-object masks when the reader provides them)."""
        return cls(sample.gt_mask, getattr(sample, "gt_object_masks", None))

    def bind(self, sample: Any) -> "OraclePointer":
        return self.from_sample(sample)

    def _points(self, i: int) -> np.ndarray:
        if self._objects is None:
            return interior_points(self._gt(i))
        pts = []
        for m in self._objects(i):
            p = interior_points(m, min_fraction=1.0)  # the largest region only
            if len(p):
                pts.append(p[0])
        return np.asarray(pts, dtype=np.float64).reshape(-1, 2)

    def point(self, video, query, frames, l=None, progress=None):
        if self._gt is None:
            raise ConfigError("the oracle pointer needs ground-truth masks: use it through `eval --pointer oracle`")
        out = {}
        for n, i in enumerate(frames):
            out[i] = self._points(i)
            if progress:
                progress("pointing", n + 1, len(frames))
        return out
