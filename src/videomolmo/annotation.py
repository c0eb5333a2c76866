"""Masks -> training points: the point annotation pipeline (VideoMolmo paper Sec. 5, Eq. 7-8).

For each (video, object, frame) with a ground-truth mask, `k` candidate points are drawn inside
the mask with probability proportional to their Euclidean distance to the nearest boundary pixel
(SciPy's exact EDT), each candidate is turned into a mask by the backend, and the candidate whose
mask has the highest IoU with the ground truth is kept. The backend segments the click the way it
will be segmented at an anchor of the mask stage: with `predict_frame` on the open video when it
uses a video cue (the cpu backend's motion against the neighbouring frames; the pipeline is
given whole videos, so the cue is there), else with the single-frame `predict_image`
(`video_cue=False` forces the single frame).

Everything is deterministic under a seed: each (video, object, frame) gets its own random stream,
derived by hashing its identity, so sharded runs, resumed runs and reruns give identical points.

Output is JSONL, one line per (video, expression, object, frame)::

    {"video": "dog", "exp_id": "0", "obj_id": "1", "frame": "00005", "frame_index": 5,
     "point": [x, y], "iou": 0.91, "candidates": 10}

A frame where the object is absent gets `"point": null, "iou": null, "candidates": 0`, so that a
resumed run knows it was done. Each line is written with one `write` + `flush` + `fsync`, and a
resumed run drops a torn trailing line (a kill mid-write) before appending, so nothing written is
lost and nothing is written twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from scipy.ndimage import distance_transform_edt

from videomolmo.errors import ConfigError, DatasetError, VideoMolmoError
from videomolmo.files import JsonlLog, RunSettings

__all__ = [
    "AnnotationConfig",
    "AnnotationReport",
    "boundary_distance",
    "iter_rows",
    "parse_shard",
    "shard_videos",
    "sample_candidates",
    "best_point",
    "unit_rng",
    "object_masks",
    "read_done",
    "annotate_dataset",
]


@dataclass(frozen=True)
class AnnotationConfig:
    """The settings that decide which points come out; recorded next to the output file."""

    candidates: int = 10
    seed: int = 0
    frame_step: int = 1
    backend: str = "cpu"
    video_cue: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.candidates, (int, np.integer)) or self.candidates <= 0:
            raise ConfigError(f"--candidates must be a positive number of candidate clicks, got {self.candidates}")
        if not isinstance(self.frame_step, (int, np.integer)) or self.frame_step <= 0:
            raise ConfigError(f"--frame-step must be a positive integer, got {self.frame_step}")


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int]:
    """`"i/n"` (or `(i, n)`) -> `(i, n)` with `0 <= i < n`; None means the whole dataset."""
    if spec is None:
        return (0, 1)
    if isinstance(spec, tuple):
        i, n = spec
    else:
        parts = str(spec).split("/")
        try:
            if len(parts) != 2:
                raise ValueError
            i, n = int(parts[0]), int(parts[1])
        except ValueError:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if n <= 0 or not 0 <= i < n:
        raise ConfigError(f"--shard {i}/{n}: need 0 <= i < n")
    return int(i), int(n)


def shard_videos(videos: Iterable[str], shard: tuple[int, int]) -> list[str]:
    """The videos of shard `i` of `n`: every n-th video of the sorted list, starting at i.

    Disjoint and covering across i = 0..n-1, independent of dataset order, and balanced to
    within one video. Sharding by video keeps one video's objects (shared by its expressions)
    on one machine, so each is annotated once.
    """
    i, n = parse_shard(shard)
    return sorted(set(videos))[i::n]


# ----------------------------------------------------------------------------- the algorithm


def unit_rng(seed: int, video: str, obj_id: str, frame: str) -> np.random.Generator:
    """The random stream of one (video, object, frame): a hash of its identity, not of run order."""
    digest = hashlib.sha256(f"{seed}\x1f{video}\x1f{obj_id}\x1f{frame}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest pixel outside it (0 outside).

    The frame edge counts as boundary: a click on the edge of the picture is as uninformative as
    one on the object's contour. Computed on the mask's bounding box (plus a 1-pixel margin) only.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=np.float64)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.pad(mask[y0:y1, x0:x1], 1, constant_values=False)
    out[y0:y1, x0:x1] = distance_transform_edt(crop)[1:-1, 1:-1]
    return out


def sample_candidates(mask: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw up to `k` distinct points inside `mask`, P(pixel) proportional to its boundary distance.

    Returns float64 (m, 2) pixel (x, y) at pixel centres (column + 0.5, row + 0.5), m = min(k,
    number of mask pixels); (0, 2) for an empty mask.
    """
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")
    dist = boundary_distance(mask)
    ys, xs = np.nonzero(dist)
    if len(ys) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    weights = dist[ys, xs]
    pick = rng.choice(len(ys), size=min(k, len(ys)), replace=False, p=weights / weights.sum())
    return np.stack([xs[pick] + 0.5, ys[pick] + 0.5], axis=1).astype(np.float64)


def _iou(pred: np.ndarray, gt: np.ndarray) -> float:
    from videomolmo.metrics import jaccard

    return float(jaccard(gt, pred))


def best_point(
    frame: np.ndarray,
    mask: np.ndarray,
    predictor: Any,
    k: int,
    rng: np.random.Generator,
    segment: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray | None, float | None, int]:
    """Best of `k` distance-weighted candidates: `(point (2,), its mask's IoU with mask, #candidates)`.

    Each candidate is segmented by `segment(points (1, 2)) -> bool (H, W)` when given (e.g. the
    backend's `predict_frame` on the open video), else by `predictor.predict_image(frame,
    points)`. Ties keep the earliest candidate. An empty mask gives `(None, None, 0)`.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != frame.shape[:2]:
        raise VideoMolmoError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is {frame.shape[1]}x{frame.shape[0]}"
        )
    candidates = sample_candidates(mask, k, rng)
    best, best_iou = None, -1.0
    if segment is None:
        def segment(points: np.ndarray) -> np.ndarray:
            return predictor.predict_image(frame, points)

    for point in candidates:
        iou = _iou(np.asarray(segment(point[None, :]), dtype=bool), mask)
        if iou > best_iou:
            best, best_iou = point, iou
    if best is None:
        return None, None, 0
    return best, best_iou, len(candidates)


# ----------------------------------------------------------------------------- dataset level


def _obj_key(obj_ids: list) -> str:
    return "+".join(str(o) for o in obj_ids) if obj_ids else "all"


def object_masks(sample: Any, i: int) -> list[tuple[str, np.ndarray]]:
    """`[(obj_id, mask)]` of listed frame `i`: one per referred object when an expression refers
    to several and the reader keeps them apart (`Sample.gt_object_masks`), else one mask (the
    union) under the object's id, or under the joined ids (e.g. "1+3")."""
    keys = _unit_obj_keys(sample)
    if len(keys) > 1:
        masks = sample.gt_object_masks(i)
        if len(masks) != len(keys):
            raise DatasetError(
                f"{sample.video_id}/{sample.exp_id}: {len(masks)} object masks for {len(keys)} object ids "
                f"on frame {sample.frame_names[i]}"
            )
        return [(o, np.asarray(m, dtype=bool)) for o, m in zip(keys, masks)]
    return [(keys[0], np.asarray(sample.gt_mask(i), dtype=bool))]


def read_done(path: str | Path) -> dict[tuple[str, str, str, str], dict]:
    """Rows already in an output file, keyed by (video, exp_id, obj_id, frame).

    A torn last line is ignored; a malformed complete line means the file is not ours and
    raises rather than being silently appended to.
    """
    done: dict[tuple[str, str, str, str], dict] = {}
    for n, row in enumerate(JsonlLog(path).read(strict=True), 1):
        try:
            key = (str(row["video"]), str(row["exp_id"]), str(row["obj_id"]), str(row["frame"]))
        except KeyError:
            raise VideoMolmoError(f"{path}:{n}: not an annotation row; refusing to append to it") from None
        done[key] = row
    return done


def _settings_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".settings.json")


# Settings that change the rows themselves. frame_step and shard only choose which rows are
# made (every row's seed comes from its identity), so a file may be extended with other values,
# e.g. a quick --frame-step 5 pass later completed with --frame-step 1.
_ROW_SETTINGS = ("candidates", "seed", "backend", "video_cue")


def _check_settings(out_path: Path, config: AnnotationConfig, shard: tuple[int, int], resuming: bool) -> None:
    """Refuse to resume a file made with other candidates / seed / backend: its rows would not match."""
    RunSettings(_settings_path(out_path), keys=_ROW_SETTINGS).check_or_write(
        {**asdict(config), "shard": list(shard)}, what=str(out_path), fresh=not resuming)


@dataclass
class AnnotationReport:
    """What one `annotate_dataset` call did."""

    written: int = 0
    skipped: int = 0
    reused: int = 0
    empty: int = 0
    predicted_frames: int = 0
    seconds_predicting: float = 0.0
    iou_sum: float = 0.0

    @property
    def mean_iou(self) -> float | None:
        """Mean best IoU over the (object, frame) pairs predicted in this call."""
        return self.iou_sum / self.predicted_frames if self.predicted_frames else None


def _work_units(dataset: Iterable[Any], videos: set[str], frame_step: int) -> list[tuple[Any, int]]:
    return [(s, i) for s in dataset if s.video_id in videos for i in range(0, len(s.frame_names), frame_step)]


def annotate_dataset(
    dataset: Iterable[Any],
    predictor: Any,
    out_path: str | Path,
    candidates: int = 10,
    seed: int = 0,
    shard: tuple[int, int] | str | None = (0, 1),
    frame_step: int = 1,
    backend_name: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    video_cue: bool = True,
) -> AnnotationReport:
    """Annotate every listed frame (every `frame_step`-th) of the shard's videos into `out_path`.

    Resumable: rows already in `out_path` are skipped (and a torn last line is dropped first).
    Objects shared by several expressions of a video are annotated once and written for each.
    `progress(done, total)` is called after each (sample, frame) unit. With `video_cue` and a
    backend that has one (`uses_video_cue`), clicks are segmented on the open video
    (`predict_frame`), else on the frame alone.
    """
    import time

    with_video = bool(video_cue and getattr(predictor, "uses_video_cue", False))
    config = AnnotationConfig(candidates=candidates, seed=seed, frame_step=frame_step,
                              backend=backend_name or getattr(predictor, "name", "custom"), video_cue=with_video)
    shard = parse_shard(shard)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise VideoMolmoError(f"{out_path}: is a directory; --out must be a .jsonl file path")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    samples = list(dataset)
    no_gt = [s for s in samples if not getattr(s, "has_masks", True)]
    if no_gt and len(no_gt) == len(samples):
        raise VideoMolmoError(f"{no_gt[0].video_id}: this split has no ground-truth masks to annotate")
    samples = [s for s in samples if getattr(s, "has_masks", True)]
    videos = set(shard_videos([s.video_id for s in samples], shard))
    units = _work_units(samples, videos, config.frame_step)

    resuming = out_path.exists()
    _check_settings(out_path, config, shard, resuming)
    log = JsonlLog(out_path)
    log.repair()
    done = read_done(out_path)
    # (video, obj, frame) -> computed result, so a second expression on the same object is free.
    results: dict[tuple[str, str, str], tuple[Any, Any, int]] = {
        (v, o, f): (row["point"], row["iou"], row["candidates"]) for (v, _, o, f), row in done.items()
    }
    report = AnnotationReport()
    video_cache: dict[Any, Any] = {}
    try:
        for n_unit, (sample, i) in enumerate(units, 1):
            frame_name = str(sample.frame_names[i])
            obj_keys = _unit_obj_keys(sample)
            keys = [(sample.video_id, str(sample.exp_id), o, frame_name) for o in obj_keys]
            if all(key in done for key in keys):
                report.skipped += len(keys)
            else:
                frame = None
                for obj_id, mask in object_masks(sample, i):
                    key = (sample.video_id, str(sample.exp_id), obj_id, frame_name)
                    if key in done:
                        report.skipped += 1
                        continue
                    rkey = (sample.video_id, obj_id, frame_name)
                    if rkey in results:
                        point, iou, ncand = results[rkey]
                        report.reused += 1
                    else:
                        if frame is None:
                            frame = _frame(sample, i, video_cache)
                        segment = None
                        if with_video:
                            state = _state(sample, predictor, video_cache)

                            def segment(points, state=state, i=i):
                                return predictor.predict_frame(state, i, points)
                        t0 = time.perf_counter()
                        pt, iou, ncand = best_point(frame, mask, predictor, config.candidates,
                                                    unit_rng(config.seed, sample.video_id, obj_id, frame_name),
                                                    segment=segment)
                        report.seconds_predicting += time.perf_counter() - t0
                        if pt is not None:
                            report.predicted_frames += 1
                            report.iou_sum += float(iou)
                        point = None if pt is None else [round(float(pt[0]), 2), round(float(pt[1]), 2)]
                        iou = None if iou is None else round(float(iou), 6)
                        results[rkey] = (point, iou, ncand)
                    if point is None:
                        report.empty += 1
                    row = {"video": sample.video_id, "exp_id": str(sample.exp_id), "obj_id": obj_id,
                           "frame": frame_name, "frame_index": i, "point": point, "iou": iou,
                           "candidates": int(ncand)}
                    log.append([row])  # one write + fsync per row: a kill tears at most this line
                    done[key] = row
                    report.written += 1
            if progress is not None:
                progress(n_unit, len(units))
    finally:
        _close_videos(video_cache)
    return report


def _unit_obj_keys(sample: Any) -> list[str]:
    """The obj_id values `object_masks` gives for a sample, known without loading any mask."""
    obj_ids = list(sample.obj_ids)
    if len(obj_ids) > 1 and hasattr(sample, "gt_object_masks"):
        return [str(o) for o in obj_ids]
    return [_obj_key(obj_ids)]


def _frame(sample: Any, i: int, cache: dict[Any, Any]) -> np.ndarray:
    """Frame `i` of a sample; one video stays open at a time (samples come grouped by video)."""
    key = (sample.video_id, tuple(sample.frame_names))
    if key not in cache:
        _close_videos(cache)
        cache[key] = sample.video()
    frame = cache[key][i]
    return frame


# Marks the predictor states in the video cache (video keys start with the video id).
_STATE = object()


def _state(sample: Any, predictor: Any, cache: dict[Any, Any]) -> Any:
    """The predictor's state on the sample's (already open, cached) video."""
    key = (_STATE, sample.video_id, tuple(sample.frame_names))
    if key not in cache:
        video = cache[(sample.video_id, tuple(sample.frame_names))]
        for k in [k for k in cache if k[0] is _STATE]:
            del cache[k]
        cache[key] = predictor.init_state(video)
    return cache[key]


def _close_videos(cache: dict[Any, Any]) -> None:
    for key, v in cache.items():
        if key[0] is _STATE:
            continue
        close = getattr(v, "close", None)
        if close is not None:
            close()
    cache.clear()


def iter_rows(path: str | Path) -> Iterator[dict]:
    """The complete rows of an annotation file, in file order (a torn last line is skipped)."""
    yield from read_done(path).values()
