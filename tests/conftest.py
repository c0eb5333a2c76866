"""Shared test material: the real DAVIS frames beside the checkout, and tiny videos made on the fly.

`DAVIS` is `../shared/data/davis16-mini` (read in place, never copied); tests that need it are
marked `needs_davis` (or use the `davis` fixture) and skip where it is absent. `write_frames` /
`moving_box_frames` make the small clips most tests run on. `FLAT` is the model override that
the training-head tests share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DAVIS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "davis16-mini"
# test-tiny at one 56-px crop, one token per patch: the tiny presets' layout, which the grounding,
# motion, attribute and patch-selection heads are built for.
FLAT = {"crop_mode": "resize", "pool": "none", "max_crops": 1}
needs_davis = pytest.mark.skipif(not (DAVIS / "JPEGImages").is_dir(), reason="../shared/data/davis16-mini is not available")


@pytest.fixture(scope="session")
def davis() -> Path:
    if not (DAVIS / "JPEGImages").is_dir():
        pytest.skip("../shared/data/davis16-mini is not available")
    return DAVIS


def moving_box_frames(n: int, h: int = 24, w: int = 32, box: int = 8, step: int = 1, value: int = 200) -> np.ndarray:
    """(n, h, w, 3) uint8 frames with a bright square moving `step` pixels right per frame."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        x = min(w - box, 2 + t * step)
        frames[t, h // 2 - box // 2: h // 2 + box // 2, x: x + box] = value
    return frames


def write_frames(folder: Path, frames: np.ndarray, ext: str = "png") -> Path:
    """A frame folder `<folder>/00000.<ext>, ...` as the frame-folder readers expect."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(np.asarray(f)).save(folder / f"{i:05d}.{ext}")
    return folder
