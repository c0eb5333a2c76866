"""The resumable, shardable benchmark runner behind `videomolmo eval`.

A run directory holds::

    config.json                     the settings the run was started with (a rerun must match)
    rows.jsonl | rows.shard-I-of-N.jsonl   per-expression metric rows, append-only
    predictions/<video>/<exp_id>/<frame>.png   the official submission layout
    anno_<a>/<video>/<frame>.png    Ref-DAVIS17 only: ReferFormer's per-annotator id maps
    summary.json, summary.md        written once every unit of every shard has its rows
    worst/                          optional renders of the worst expressions

This module holds the benchmark protocols: which benchmarks exist, how expressions group into
*units* (one expression; for Ref-DAVIS17 all objects of one annotator variant of one video,
because its masks are scored as one multi-object map), and how a unit is predicted and scored
(`Evaluator`). The resumable, sharded bookkeeping is `evaluation/journal.py`: a unit's rows are
written after its predictions are on disk, so after a crash or `kill -9` a rerun redoes exactly
the units without rows (overwriting any half-written PNGs) and never duplicates a row.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from videomolmo import render
from videomolmo.data import load_dataset
from videomolmo.errors import ConfigError, DatasetError, VideoMolmoError
from videomolmo.evaluation.journal import Unit, sample_key
from videomolmo.files import RunSettings, ensure_writable_dir
from videomolmo.masks import read_mask, submission_path, write_id_mask, write_submission_mask
from videomolmo.metrics import boundary_f, jaccard, point_hits_mask, point_prf, prf_from_counts
from videomolmo.notices import BundledModelWarning, NothingFoundWarning
from videomolmo.settings import DEFAULTS, PipelineConfig

# --------------------------------------------------------------------------- config


@dataclass
class RunConfig:
    """The settings that decide a run's results; a rerun into the same directory must match."""

    bench: str
    data: str
    split: str | None = None
    model: str | None = None
    pointer: str = "model"
    k: int = DEFAULTS.k
    tau: float = DEFAULTS.tau
    l: int | None = DEFAULTS.l
    mask_backend: str = DEFAULTS.mask_backend
    fusion: str = DEFAULTS.fusion
    baseline: bool = False
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def prepare_run_dir(run_dir: str | os.PathLike, config: RunConfig) -> Path:
    """Create the run dir (or reopen it), checking it is writable and its settings match."""
    run_dir = ensure_writable_dir(run_dir)
    RunSettings(run_dir / "config.json").check_or_write(config.to_json(), what=str(run_dir))
    return run_dir


# --------------------------------------------------------------------------- units


def davis_annotator(exp_id) -> int:
    """Ref-DAVIS17 orders each object's expressions as annotator-1 first-frame, annotator-1
    full-video, annotator-2 first-frame, annotator-2 full-video (ReferFormer's conversion);
    the variant is the expression index modulo 4."""
    try:
        return int(exp_id) % 4
    except (TypeError, ValueError):
        raise DatasetError(f"Ref-DAVIS17 expression id {exp_id!r} is not an integer") from None


def make_units(bench: str, samples: Iterable) -> list[Unit]:
    """Group samples into units, sorted by key so every shard sees the same order."""
    samples = list(samples)
    units: dict[str, Unit] = {}
    for s in samples:
        if bench == "ref-davis17":
            key = f"{s.video_id}/anno_{davis_annotator(s.exp_id)}"
        else:
            key = sample_key(s)
        units.setdefault(key, Unit(key, [])).samples.append(s)
    seen: set[str] = set()
    for s in samples:
        k = sample_key(s)
        if k in seen:
            raise DatasetError(f"duplicate expression {k} in the benchmark")
        seen.add(k)
    return [units[k] for k in sorted(units)]


# --------------------------------------------------------------------------- benchmarks

#: `videomolmo eval BENCH` names -> the reader format (`videomolmo.data`), None = auto-detect.
BENCHMARKS: dict[str, str | None] = {
    "ref-davis17": "refdavis",
    "ref-youtube-vos": "ytvos",
    "mevis": "mevis",
    "revos": "revos",
    "reasonvos": "reasonvos",
    "synthetic": "mevis",  # videomolmo.synth writes the MeViS layout (+ points.json)
    "vpos": None,  # VPoS-style point sets: any supported layout that ships points.json
}


def check_bench(name: str) -> str:
    key = name.lower().replace("_", "-")
    aliases = {"refdavis": "ref-davis17", "ref-davis": "ref-davis17", "davis": "ref-davis17",
               "ref-ytvos": "ref-youtube-vos", "ytvos": "ref-youtube-vos", "refytvos": "ref-youtube-vos",
               "synth": "synthetic", "vpos-bench": "vpos"}
    key = aliases.get(key, key)
    if key not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return key


def load_benchmark(bench: str, data: str | os.PathLike, split: str | None = None):
    """The benchmark's `Dataset` (readers from `videomolmo.data`)."""
    return load_dataset(data, split=split, fmt=BENCHMARKS[bench])


def shuffle_donors(samples: Sequence) -> dict[str, Any]:
    """For the `--context shuffle` ablation: video id -> a sample of the next other video in
    sorted order (cyclic), so each clip gets another clip's context and a resumed or sharded run
    picks the same donor."""
    first: dict[str, Any] = {}
    for s in samples:
        first.setdefault(s.video_id, s)
    vids = sorted(first)
    if len(vids) < 2:
        raise ConfigError("--context shuffle needs at least two videos (it takes another clip's context)")
    return {v: first[vids[(i + 1) % len(vids)]] for i, v in enumerate(vids)}


def sample_category(sample) -> str | None:
    """ReVOS referring / reasoning, synthetic expression kind, or None."""
    meta = getattr(sample, "meta", None) or {}
    cat = meta.get("kind") or meta.get("category")
    return str(cat) if cat is not None else None


def count_gt(sample) -> int | None:
    """Ground-truth count of a sample: the number of referred objects (synthetic / point sets)."""
    if getattr(sample, "gt_points", None) is None:
        return None
    return len(getattr(sample, "obj_ids", []) or [])


def _per_object_masks(sample, i: int, union: np.ndarray, points: np.ndarray) -> list[np.ndarray]:
    """One mask per ground-truth point on frame i: the referred object's mask that contains it
    (`Sample.gt_object_masks`), else the union of all referred objects."""
    getter = getattr(sample, "gt_object_masks", None)
    objs = list(getter(i)) if getter is not None else []
    out = []
    for p in points:
        hit = [m for m in objs if point_hits_mask(p[None], m)[0]]
        out.append(hit[0] if hit else union)
    return out


def score_points(sample, pred_points: dict[int, np.ndarray]) -> dict[str, Any] | None:
    """Point P/R/F1 on the anchor frames that have ground-truth points (Molmo's protocol,
    `metrics.point_prf`), summed over frames (tp / fp / fn) and as P / R / F1."""
    gts = getattr(sample, "gt_points", None)
    if gts is None:
        return None
    tp = n_pred = n_gt = 0
    frames = 0
    for i, pred in sorted(pred_points.items()):
        if i >= len(gts) or gts[i] is None:
            continue
        gt = np.asarray(gts[i], dtype=np.float64).reshape(-1, 2)
        union = sample.gt_mask(i) if sample.has_masks else None
        masks = _per_object_masks(sample, i, union, gt) if union is not None else [np.ones((1, 1), bool)] * len(gt)
        pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
        pred = pred[np.isfinite(pred).all(axis=1)]
        s = point_prf(pred, gt, masks)
        tp += s.hits
        n_pred += s.n_pred
        n_gt += s.n_gt
        frames += 1
    if frames == 0:
        return None
    total = prf_from_counts(tp, n_pred, n_gt)
    return {"P": total.precision, "R": total.recall, "F1": total.f1, "tp": tp, "fp": n_pred - tp, "fn": n_gt - tp,
            "point_frames": frames}


@dataclass
class Evaluator:
    """Runs one benchmark unit: pointing, masks into the submission layout, metric rows.

    `make_pipeline(sample)` returns the `Pipeline` for a sample (a fixed model pipeline, or an
    oracle pipeline built on the sample's ground truth). Masks stream: one frame at a time is
    written, scored and dropped.
    """

    bench: str
    run_dir: Path
    make_pipeline: Callable[[Any], Any]
    config: PipelineConfig = DEFAULTS
    masks: bool = True  # False: points only (no mask stage, no J/F)
    #: (stage, done, total) within the expression being evaluated (pointing, masks).
    progress: Callable[[str, int, int], None] | None = None

    @property
    def pred_dir(self) -> Path:
        return self.run_dir / "predictions"

    def predict_sample(self, sample) -> tuple[dict[str, Any], Iterator[tuple[int, np.ndarray]] | None]:
        import warnings

        # A benchmark's rows say what was found; a warning per expression would drown the log.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BundledModelWarning)
            warnings.simplefilter("ignore", NothingFoundWarning)
            return self._predict_sample(sample)

    def _predict_sample(self, sample) -> tuple[dict[str, Any], Iterator[tuple[int, np.ndarray]] | None]:
        pipe = self.make_pipeline(sample)
        video = sample.video()
        if self.masks:
            c = self.config
            res = pipe(video, sample.expression, k=c.k, tau=c.tau, l=c.l, fusion=c.fusion, progress=self.progress)
            stream = res.masks(self.progress)
        else:
            res = pipe.point(video, sample.expression, k=self.config.k, l=self.config.l, progress=self.progress)
            stream = None
        info = {
            "points": {str(i): np.round(p, 2).tolist() for i, p in sorted(res.points.items())},
            "count": res.count,
            "_points": res.points,
        }
        return info, stream

    def _write_and_score(self, sample, stream, exclusive: bool = False) -> dict[str, Any]:
        has_gt = sample.has_masks
        js: list[float] = []
        fs: list[float] = []
        # The first-frame baseline (frame 0's true mask copied to every frame), scored beside
        # the method so a reader sees whether the method beats doing nothing.
        bjs: list[float] = []
        bfs: list[float] = []
        gt0 = None
        n = 0
        for i, mask in stream:
            if i >= len(sample.frame_names):
                break
            write_submission_mask(self.pred_dir, sample.video_id, sample.exp_id, sample.frame_names[i], mask)
            if has_gt:
                gt = sample.gt_mask(i)
                gt0 = gt if gt0 is None else gt0
                bjs.append(float(jaccard(gt, gt0)))
                bfs.append(float(boundary_f(gt, gt0)))
                if not exclusive:
                    js.append(float(jaccard(gt, mask)))
                    fs.append(float(boundary_f(gt, mask)))
            n += 1
        if n != len(sample.frame_names):
            raise VideoMolmoError(
                f"{sample.video_id}/{sample.exp_id}: mask stage produced {n} frames for {len(sample.frame_names)}"
            )
        base = {}
        if bjs:
            bj, bf = float(np.mean(bjs)), float(np.mean(bfs))
            base = {"baseline_J": bj, "baseline_F": bf, "baseline_JF": (bj + bf) / 2}
        if not has_gt or exclusive:
            return {"J": None, "F": None, "JF": None, "frames": n, **base}
        j, f = float(np.mean(js)), float(np.mean(fs))
        return {"J": j, "F": f, "JF": (j + f) / 2, "frames": n, **base}

    def process(self, unit: Unit) -> list[dict]:
        rows = []
        davis = self.bench == "ref-davis17" and self.masks
        for s in unit.samples:
            info, stream = self.predict_sample(s)
            row: dict[str, Any] = {
                "key": sample_key(s),
                "video": s.video_id,
                "exp_id": s.exp_id,
                "expression": s.expression,
                "points": info["points"],
                "count": info["count"],
            }
            cat = sample_category(s)
            if cat:
                row["category"] = cat
            cgt = count_gt(s)
            if cgt is not None:
                row["count_gt"] = cgt
            if stream is not None:
                row.update(self._write_and_score(s, stream, exclusive=davis))
            pts = score_points(s, info["_points"])
            if pts:
                row.update(pts)
            rows.append(row)
        if davis:
            self._score_davis_unit(unit, rows)
        return rows

    def _score_davis_unit(self, unit: Unit, rows: list[dict]) -> None:
        """ReferFormer's Ref-DAVIS17 protocol for one (video, annotator) unit.

        The objects' masks become one id map (on overlap the lower object id wins, as argmax over
        equal scores does), written to `anno_<a>/<video>/<frame>.png` -- the folder ReferFormer
        hands to the DAVIS-2017 toolkit. That toolkit (task "unsupervised", all frames) scores it
        by matching ground-truth objects to predicted ids with the Hungarian algorithm on mean
        J&F; we do the same, so a row's J / F are those of the id its object was matched to."""
        from scipy.optimize import linear_sum_assignment

        samples = unit.samples
        anno = davis_annotator(samples[0].exp_id)
        order = sorted(range(len(samples)), key=lambda j: _obj_sort_key(samples[j]))
        first = samples[0]
        n = len(samples)
        scored = [j for j in range(n) if samples[j].has_masks]
        js = np.zeros((n, n))  # [ground-truth sample j, predicted id rank] summed over frames
        fs = np.zeros((n, n))
        frames = 0
        for i, name in enumerate(first.frame_names):
            ids = None
            for rank, j in enumerate(order):
                m = _read_bool_png(submission_path(self.pred_dir, samples[j].video_id, samples[j].exp_id, name))
                if ids is None:
                    ids = np.zeros(m.shape, np.uint8)
                ids[(ids == 0) & m] = rank + 1
            assert ids is not None
            write_id_mask(self.run_dir / f"anno_{anno}" / first.video_id / f"{name}.png", ids)
            for j in scored:
                gt = samples[j].gt_mask(i)
                for rank in range(n):
                    pred = ids == rank + 1
                    js[j, rank] += float(jaccard(gt, pred))
                    fs[j, rank] += float(boundary_f(gt, pred))
            frames += 1
        for row in rows:
            row["annotator"] = anno
        if not scored or not frames:
            return
        js, fs = js / frames, fs / frames
        gt_idx, pred_rank = linear_sum_assignment(-(js + fs)[scored])
        for g, r in zip(gt_idx, pred_rank):
            j = scored[g]
            rows[j].update(J=float(js[j, r]), F=float(fs[j, r]), JF=float(js[j, r] + fs[j, r]) / 2,
                           matched_to=samples[order[r]].exp_id)


def _obj_sort_key(sample) -> tuple:
    ids = getattr(sample, "obj_ids", None) or []
    try:
        return (int(ids[0]) if ids else 0, int(sample.exp_id))
    except (TypeError, ValueError):
        return (0, str(sample.exp_id))


def _read_bool_png(path: Path) -> np.ndarray:
    return read_mask(path, "any")


def render_rows(run_dir: Path, dataset, rows: Sequence[dict], out_dir: Path, max_frames: int = 300) -> list[Path]:
    """Render predictions of the given rows (GT outline, anchor points, caption) to
    `<out_dir>/<video>__<exp>.mp4` and a contact sheet `.png` next to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for row in rows:
        s = dataset.get(row["video"], row["exp_id"])
        pts = {int(k): np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in (row.get("points") or {}).items()}
        video = s.video()
        n = min(len(s.frame_names), max_frames)

        def items():
            for i in range(n):
                p = submission_path(run_dir / "predictions", s.video_id, s.exp_id, s.frame_names[i])
                pred = read_mask(p, "any") if p.is_file() else None
                gt = s.gt_mask(i) if s.has_masks else None
                yield render.OverlayFrame(video[i], i, pred, pts.get(i), gt)

        stem = f"{s.video_id}__{s.exp_id}".replace("/", "_")
        score = row.get("JF", row.get("F1"))
        caption = s.expression if score is None else f"{s.expression}  [{100 * score:.1f}]"
        render.render(items(), out_dir / f"{stem}.mp4", out_dir / f"{stem}.png", query=caption,
                      fps=float(getattr(video, "fps", 10) or 10), num_frames=n)
        written.append(out_dir / f"{stem}.mp4")
    return written
