"""Score a folder of predicted masks against a benchmark: the engine of `videomolmo eval-masks`.

Predictions are in the submission layout used by MeViS / Ref-YouTube-VOS / ReferFormer::

    <pred_dir>/<video>/<exp_id>/<frame>.png      any non-zero pixel is foreground

(ReVOS video keys contain a "/", so their folders nest one level deeper, as in VISA's evaluator.)

Protocol (the MeViS one): an expression's J and F are the means of the per-frame DAVIS J and F
(`videomolmo.metrics.jaccard` / `boundary_f`) over all of its listed frames; the overall J and F
are means over expressions, and J&F = (J + F) / 2. A missing prediction -- a whole expression
folder or a single frame -- scores J = F = 0 on the frames it lacks and is listed in `missing`
(as the MeViS evaluator scores a missing video 0), so an incomplete submission cannot look
better than it is. A prediction PNG whose size differs from the ground truth is an error.

`first_frame_baseline` writes the interim reference baseline: each expression's ground-truth
mask of its first listed frame, copied to every frame.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from videomolmo.data.sample import Dataset, PngMaskSource, Sample
from videomolmo.errors import DatasetError
from videomolmo.files import atomic_write_bytes
from videomolmo.masks import check_same_size, foreground, submission_path
from videomolmo.parallel import parallel_map

__all__ = [
    "evaluate_predictions",
    "score_sample",
    "score_video",
    "read_prediction",
    "per_video",
    "per_group",
    "first_frame_baseline",
]


# --------------------------------------------------------------------------- reading predictions


def read_prediction(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A predicted mask PNG as bool (H, W); non-zero is foreground.

    Raises `MaskError` naming the file if it is unreadable or its size is not `shape` (H, W).
    """
    pred = foreground(path)
    check_same_size(np.empty(shape, dtype=bool), pred, path)
    return pred


# --------------------------------------------------------------------------- scoring one expression


@dataclass
class ExpressionScore:
    """Scores of one expression; `missing` holds paths relative to the prediction folder."""

    video: str
    exp_id: str
    J: float
    F: float
    frames: int
    missing: list[str]

    def as_row(self) -> dict[str, Any]:
        return {"video": self.video, "exp_id": self.exp_id, "J": self.J, "F": self.F,
                "J&F": (self.J + self.F) / 2, "frames": self.frames}


def score_sample(sample: Sample, pred_dir: Path, chunk: int = 16,
                 gt_cache: dict[int, np.ndarray] | None = None) -> ExpressionScore:
    """J and F of one expression's predictions (missing frames score 0; see the module docstring).

    Frames are scored `chunk` at a time so that a long video never holds all its masks at once.
    `gt_cache` (frame index -> GT mask) lets expressions with the same ground truth share decodes.
    """
    from videomolmo.metrics import boundary_f, jaccard

    n = len(sample.frame_names)
    if n == 0:
        raise DatasetError(f"{sample.video_id}/{sample.exp_id}: the expression lists no frames")
    paths = [submission_path(pred_dir, sample.video_id, sample.exp_id, name) for name in sample.frame_names]
    rel = f"{sample.video_id}/{sample.exp_id}"
    if not paths[0].parent.is_dir():
        return ExpressionScore(sample.video_id, sample.exp_id, 0.0, 0.0, n, [rel])
    totals = np.zeros(2)
    missing: list[str] = []
    gts: list[np.ndarray] = []
    preds: list[np.ndarray] = []

    def flush() -> None:
        if gts:
            g, p = np.stack(gts), np.stack(preds)
            totals[0] += float(np.sum(jaccard(g, p)))
            totals[1] += float(np.sum(boundary_f(g, p)))
            gts.clear()
            preds.clear()

    for i, path in enumerate(paths):
        if not path.is_file():
            missing.append(f"{rel}/{path.name}")
            continue
        gt = gt_cache.get(i) if gt_cache is not None else None
        if gt is None:
            gt = sample.gt_mask(i)
            if gt_cache is not None:
                gt_cache[i] = gt
        gts.append(gt)
        preds.append(read_prediction(path, gt.shape))
        if len(gts) == chunk:
            flush()
    flush()
    return ExpressionScore(sample.video_id, sample.exp_id, float(totals[0] / n), float(totals[1] / n), n, missing)


def score_video(samples: list[Sample], pred_dir: Path) -> list[ExpressionScore]:
    """Score the expressions of one video, decoding each distinct PNG ground truth once.

    Ref-DAVIS17 has four expressions per object and Ref-YouTube-VOS about two, all reading the
    same annotation PNGs; expressions with an identical mask source share one cache (held only
    while that group is scored, so memory stays at one object-set's frames). RLE ground truth
    decodes faster than a cache lookup pays off and is not cached.
    """
    groups: dict[Any, list[int]] = {}
    for k, s in enumerate(samples):
        key = s.masks if isinstance(s.masks, PngMaskSource) else ("own", k)
        groups.setdefault(key, []).append(k)
    out: dict[int, ExpressionScore] = {}
    for members in groups.values():
        cache: dict[int, np.ndarray] | None = {} if len(members) > 1 else None
        for k in members:
            out[k] = score_sample(samples[k], pred_dir, gt_cache=cache)
    return [out[k] for k in range(len(samples))]


# --------------------------------------------------------------------------- whole benchmark


def evaluate_predictions(dataset: Dataset, pred_dir: str | Path, workers: int | None = None,
                         progress: bool = True) -> dict[str, Any]:
    """Score every expression of `dataset` against `pred_dir` (submission layout).

    Returns `{"overall": {"J", "F", "J&F"}, "expressions": [{"video", "exp_id", "J", "F", "J&F",
    "frames"}, ...], "missing": [...]}` with scores as fractions in [0, 1], expressions in
    dataset order, `missing` as paths relative to `pred_dir` (an expression folder, or one frame
    PNG). Runs on `workers` processes (default: all cores) with a progress bar on stderr.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DatasetError(f"{pred_dir}: prediction folder does not exist")
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.root}: the dataset has no expressions to score")
    no_gt = next((s for s in dataset if not s.has_masks), None)
    if no_gt is not None:
        split = f" split {dataset.split!r}" if dataset.split else ""
        raise DatasetError(f"{dataset.root}:{split} has no ground-truth masks (e.g. {no_gt.video_id}/{no_gt.exp_id}); "
                           "score it on the benchmark's evaluation server")
    # One work unit per video, so that expressions sharing ground truth share its decoding.
    by_video: dict[str, list[Sample]] = {}
    for s in dataset:
        by_video.setdefault(s.video_id, []).append(s)
    per_video_scores = parallel_map(partial(score_video, pred_dir=pred_dir), list(by_video.values()),
                                    workers=workers, description="scoring videos", progress=progress)
    done = {(e.video, e.exp_id): e for scores in per_video_scores for e in scores}
    return summarize(done[s.key] for s in dataset)


def summarize(scores: Iterable[ExpressionScore]) -> dict[str, Any]:
    """The eval-masks JSON from per-expression scores (overall = mean over expressions)."""
    scores = list(scores)
    j = float(np.mean([s.J for s in scores])) if scores else 0.0
    f = float(np.mean([s.F for s in scores])) if scores else 0.0
    return {
        "overall": {"J": j, "F": f, "J&F": (j + f) / 2},
        "expressions": [s.as_row() for s in scores],
        "missing": [m for s in scores for m in s.missing],
    }


def per_video(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-video means over expressions (`video`, `expressions`, `J`, `F`, `J&F`), in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for row in result["expressions"]:
        groups.setdefault(row["video"], []).append(row)
    out = []
    for video, rows in groups.items():
        j = float(np.mean([r["J"] for r in rows]))
        f = float(np.mean([r["F"] for r in rows]))
        out.append({"video": video, "expressions": len(rows), "J": j, "F": f, "J&F": (j + f) / 2})
    return out


def per_group(result: dict[str, Any], groups: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """Means over expressions per group label (e.g. ReVOS referring / reasoning, synthetic kinds).

    `groups` maps (video, exp_id) to a label; expressions without one are left out. Returns
    `group`, `expressions`, `J`, `F`, `J&F` per label, sorted by label.
    """
    buckets: dict[str, list[dict]] = {}
    for row in result["expressions"]:
        label = groups.get((row["video"], row["exp_id"]))
        if label is not None:
            buckets.setdefault(label, []).append(row)
    out = []
    for label in sorted(buckets):
        rows = buckets[label]
        j = float(np.mean([r["J"] for r in rows]))
        f = float(np.mean([r["F"] for r in rows]))
        out.append({"group": label, "expressions": len(rows), "J": j, "F": f, "J&F": (j + f) / 2})
    return out


# --------------------------------------------------------------------------- output


def _png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _baseline_one(sample: Sample, out_dir: Path) -> int:
    first = sample.gt_mask(0)
    # Every frame gets the same mask: encode the PNG once, write it T times.
    data = _png_bytes(first)
    for name in sample.frame_names:
        path = submission_path(out_dir, sample.video_id, sample.exp_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return len(sample.frame_names)


def first_frame_baseline(dataset: Dataset, out_dir: str | Path, workers: int | None = None,
                         progress: bool = True) -> int:
    """Write the "first-frame ground truth copied to all frames" baseline in the submission layout.

    Each expression's prediction on every listed frame is its ground-truth mask on the first
    listed frame (0/255 L-mode PNGs at the original resolution). Files are replaced atomically,
    so rerunning into the same folder is safe. Returns the number of PNGs written.
    """
    if len(dataset) and not dataset.has_masks:
        raise DatasetError(f"{dataset.root}: the baseline needs ground-truth masks and this split has none")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = parallel_map(partial(_baseline_one, out_dir=out_dir), list(dataset), workers=workers,
                          description="writing baseline", progress=progress)
    return int(sum(counts))
