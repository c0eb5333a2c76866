"""The point annotation pipeline: distance-weighted candidates, best-of-k, resumable sharded JSONL."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from videomolmo.annotation import (
    annotate_dataset,
    best_point,
    boundary_distance,
    parse_shard,
    read_done,
    sample_candidates,
    shard_videos,
    unit_rng,
)
from videomolmo.errors import ConfigError, VideoMolmoError
from conftest import DAVIS, needs_davis  # noqa: E402



# ----------------------------------------------------------------------------- fakes


class DiskPredictor:
    """Deterministic stand-in for a backend: the mask is a disk of fixed radius around the click."""

    name = "disk"

    def __init__(self, radius: float = 6.0, fail_after: int | None = None):
        self.radius = radius
        self.calls = 0
        self.fail_after = fail_after

    def predict_image(self, frame, points, labels=None):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        h, w = frame.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        x, y = points[0]
        return (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= self.radius**2


@dataclass
class FakeSample:
    video_id: str
    exp_id: str
    obj_ids: list
    frames: np.ndarray
    gts: np.ndarray
    masks: object = None
    has_masks: bool = True
    frame_paths: list = field(default_factory=list)

    @property
    def frame_names(self):
        return [f"{i:05d}" for i in range(len(self.frames))]

    def video(self):
        return self.frames

    def gt_mask(self, i):
        if self.masks is not None:
            return self.masks.mask(i, Path(self.frame_paths[i]))
        return self.gts[i]

    def gt_object_masks(self, i):
        if self.masks is not None:
            return self.masks.object_masks(i, Path(self.frame_paths[i]))
        return [self.gts[i]]


def _fake_dataset(n_videos: int = 4, n_frames: int = 6, h: int = 40, w: int = 56) -> list[FakeSample]:
    rng = np.random.default_rng(7)
    samples = []
    for v in range(n_videos):
        frames = rng.integers(0, 255, (n_frames, h, w, 3), dtype=np.uint8)
        gts = np.zeros((n_frames, h, w), dtype=bool)
        for t in range(n_frames - 1):  # the last frame: object absent
            y0, x0 = 5 + t, 4 + 2 * t + v
            gts[t, y0 : y0 + 18, x0 : x0 + 22] = True
        for e in range(2):  # two expressions on the same object
            samples.append(FakeSample(f"vid{v}", str(e), ["1"], frames, gts))
    return samples


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ----------------------------------------------------------------------------- sampling


def test_candidates_lie_inside_the_mask_and_are_distinct():
    mask = np.zeros((50, 70), dtype=bool)
    mask[10:30, 20:60] = True
    mask[35:45, 5:15] = True
    pts = sample_candidates(mask, 25, np.random.default_rng(0))
    assert pts.shape == (25, 2) and pts.dtype == np.float64
    cols, rows = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[rows, cols].all()
    assert len({(c, r) for c, r in zip(cols, rows)}) == 25


def test_candidates_favour_points_far_from_the_boundary():
    mask = np.zeros((220, 220), dtype=bool)
    mask[10:210, 10:210] = True
    dist = boundary_distance(mask)
    d = dist[mask]
    uniform_mean = d.mean()
    weighted_mean = (d**2).sum() / d.sum()  # E[d] when P(pixel) is proportional to d
    pts = sample_candidates(mask, 400, np.random.default_rng(123))
    got = dist[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    assert got.mean() > 1.2 * uniform_mean
    assert abs(got.mean() - weighted_mean) < 0.05 * weighted_mean
    # Boundary pixels are the least likely: far fewer samples near the edge than uniform gives.
    near = (got <= 5).mean()
    assert near < 0.5 * (d <= 5).mean()


def test_frame_edge_counts_as_boundary():
    mask = np.ones((30, 40), dtype=bool)
    dist = boundary_distance(mask)
    assert dist[0, 0] == 1 and dist[15, 20] == 15
    pts = sample_candidates(mask, 300, np.random.default_rng(0))
    on_edge = dist[pts[:, 1].astype(int), pts[:, 0].astype(int)] == 1
    assert on_edge.mean() < 0.5 * (dist == 1).mean()  # uniform sampling would give 11% here


def test_sampling_edge_cases():
    rng = np.random.default_rng(0)
    assert sample_candidates(np.zeros((8, 8), bool), 5, rng).shape == (0, 2)
    tiny = np.zeros((8, 8), bool)
    tiny[3, 4] = tiny[5, 5] = True
    pts = sample_candidates(tiny, 10, rng)
    assert sorted(map(tuple, pts.tolist())) == [(4.5, 3.5), (5.5, 5.5)]
    with pytest.raises(ConfigError):
        sample_candidates(tiny, 0, rng)


def test_unit_rng_is_stable_and_distinct():
    a = unit_rng(0, "dog", "1", "00003").integers(0, 2**31, 4)
    b = unit_rng(0, "dog", "1", "00003").integers(0, 2**31, 4)
    c = unit_rng(0, "dog", "1", "00004").integers(0, 2**31, 4)
    d = unit_rng(1, "dog", "1", "00003").integers(0, 2**31, 4)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()


# ----------------------------------------------------------------------------- best of k


def test_best_point_picks_the_candidate_with_the_highest_iou():
    from videomolmo.metrics import jaccard

    frame = np.zeros((60, 80, 3), np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:70] = True
    mask[40:55, 10:20] = True
    pred = DiskPredictor(radius=12)
    point, iou, n = best_point(frame, mask, pred, 12, np.random.default_rng(5))
    assert n == 12 and pred.calls == 12
    cands = sample_candidates(mask, 12, np.random.default_rng(5))
    ious = [jaccard(mask, DiskPredictor(12).predict_image(frame, c[None])) for c in cands]
    assert iou == pytest.approx(max(ious))
    np.testing.assert_array_equal(point, cands[int(np.argmax(ious))])
    again = best_point(frame, mask, DiskPredictor(12), 12, np.random.default_rng(5))
    np.testing.assert_array_equal(again[0], point)
    assert best_point(frame, np.zeros((60, 80), bool), pred, 12, np.random.default_rng(0)) == (None, None, 0)
    with pytest.raises(VideoMolmoError, match="mask is"):
        best_point(frame, np.zeros((10, 10), bool), pred, 3, np.random.default_rng(0))


# ----------------------------------------------------------------------------- dataset runs


def test_annotate_writes_one_row_per_expression_object_frame(tmp_path):
    ds = _fake_dataset()
    pred = DiskPredictor()
    out = tmp_path / "points.jsonl"
    report = annotate_dataset(ds, pred, out, candidates=4, seed=0)
    rows = [json.loads(line) for line in _lines(out)]
    assert len(rows) == 4 * 2 * 6 == report.written
    assert set(rows[0]) == {"video", "exp_id", "obj_id", "frame", "frame_index", "point", "iou", "candidates"}
    by_key = {(r["video"], r["exp_id"], r["frame_index"]): r for r in rows}
    for s in ds:
        for i in range(6):
            r = by_key[(s.video_id, s.exp_id, i)]
            if i == 5:
                assert r["point"] is None and r["iou"] is None and r["candidates"] == 0
            else:
                x, y = r["point"]
                assert s.gts[i][int(y), int(x)] and 0 < r["iou"] <= 1 and r["candidates"] == 4
    # The second expression on each object reuses the first's result: k calls per (video, frame).
    assert pred.calls == 4 * 5 * 4 and report.reused == 4 * 6
    for v in range(4):
        for i in range(6):
            assert by_key[(f"vid{v}", "0", i)]["point"] == by_key[(f"vid{v}", "1", i)]["point"]


def test_annotate_is_deterministic_and_frame_step_subsamples(tmp_path):
    ds = _fake_dataset()
    annotate_dataset(ds, DiskPredictor(), tmp_path / "a.jsonl", candidates=3, seed=4)
    annotate_dataset(ds, DiskPredictor(), tmp_path / "b.jsonl", candidates=3, seed=4)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    annotate_dataset(ds, DiskPredictor(), tmp_path / "c.jsonl", candidates=3, seed=5)
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    annotate_dataset(ds, DiskPredictor(), tmp_path / "s.jsonl", candidates=3, seed=4, frame_step=2)
    stepped = [json.loads(x) for x in _lines(tmp_path / "s.jsonl")]
    assert {r["frame_index"] for r in stepped} == {0, 2, 4}
    full = {(r["video"], r["exp_id"], r["frame"]): r for r in map(json.loads, _lines(tmp_path / "a.jsonl"))}
    for r in stepped:  # the same point whatever the step: seeds depend on identity, not order
        assert full[(r["video"], r["exp_id"], r["frame"])] == r
    # So a coarse pass can later be completed with a finer step into the same file.
    pred = DiskPredictor()
    report = annotate_dataset(ds, pred, tmp_path / "s.jsonl", candidates=3, seed=4, frame_step=1)
    assert report.skipped == len(stepped)
    completed = {(r["video"], r["exp_id"], r["frame"]): r for r in map(json.loads, _lines(tmp_path / "s.jsonl"))}
    assert completed == full


def test_shards_are_disjoint_covering_and_match_the_full_run(tmp_path):
    ds = _fake_dataset(n_videos=5)
    annotate_dataset(ds, DiskPredictor(), tmp_path / "full.jsonl", candidates=3)
    full = set(_lines(tmp_path / "full.jsonl"))
    parts = []
    for i in range(3):
        annotate_dataset(ds, DiskPredictor(), tmp_path / f"s{i}.jsonl", candidates=3, shard=f"{i}/3")
        parts.append(set(_lines(tmp_path / f"s{i}.jsonl")))
    assert set().union(*parts) == full
    assert sum(len(p) for p in parts) == len(full)
    vids = [f"v{i}" for i in range(10)]
    split = [shard_videos(vids, (i, 4)) for i in range(4)]
    assert sorted(sum(split, [])) == sorted(vids) and max(map(len, split)) - min(map(len, split)) <= 1


def test_resume_after_a_kill_loses_and_duplicates_nothing(tmp_path):
    ds = _fake_dataset()
    ref = tmp_path / "ref.jsonl"
    annotate_dataset(ds, DiskPredictor(), ref, candidates=3)

    # A kill in the middle of the run (the predictor dies on its 25th call) ...
    out = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        annotate_dataset(ds, DiskPredictor(fail_after=25), out, candidates=3)
    partial = _lines(out)
    assert 0 < len(partial) < len(_lines(ref))
    # ... and a torn half-line at the end, as a kill inside write() would leave.
    with open(out, "ab") as fh:
        fh.write(_lines(ref)[len(partial)].encode()[:17])
    assert len(read_done(out)) == len(partial)

    pred = DiskPredictor()
    report = annotate_dataset(ds, pred, out, candidates=3)
    assert out.read_bytes() == ref.read_bytes()
    assert report.skipped == len(partial)
    # Rerunning a finished file does no work at all.
    pred2 = DiskPredictor()
    again = annotate_dataset(ds, pred2, out, candidates=3)
    assert pred2.calls == 0 and again.written == 0 and out.read_bytes() == ref.read_bytes()


def test_resume_refuses_other_settings_and_foreign_files(tmp_path):
    ds = _fake_dataset(n_videos=1)
    out = tmp_path / "p.jsonl"
    annotate_dataset(ds, DiskPredictor(), out, candidates=3, seed=0)
    with pytest.raises(ConfigError, match="seed: 0 -> 1"):
        annotate_dataset(ds, DiskPredictor(), out, candidates=3, seed=1)
    with pytest.raises(ConfigError, match="candidates: 3 -> 4"):
        annotate_dataset(ds, DiskPredictor(), out, candidates=4, seed=0)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": 1}\n')
    with pytest.raises(VideoMolmoError, match="foreign.jsonl:1"):
        annotate_dataset(ds, DiskPredictor(), foreign, candidates=3)
    with pytest.raises(VideoMolmoError, match="is a directory"):
        annotate_dataset(ds, DiskPredictor(), tmp_path, candidates=3)


class VideoDiskPredictor(DiskPredictor):
    """A backend with a video cue: on an open video it segments a larger disk than on a frame
    alone, so the rows tell which path segmented the clicks."""

    name = "videodisk"
    uses_video_cue = True

    def __init__(self):
        super().__init__(radius=4.0)
        self.video_calls = 0
        self.states = 0

    def init_state(self, video):
        self.states += 1
        return {"video": video}

    def predict_frame(self, state, frame_idx, points, labels=None):
        self.video_calls += 1
        frame = state["video"][frame_idx]
        h, w = frame.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        x, y = points[0]
        return (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= 9.0**2


def test_annotation_segments_clicks_on_the_video_when_the_backend_has_a_video_cue(tmp_path):
    ds = _fake_dataset(n_videos=2)
    pred = VideoDiskPredictor()
    out = tmp_path / "v.jsonl"
    report = annotate_dataset(ds, pred, out, candidates=3, seed=0)
    # Every click went through predict_frame on one state per video; none through the frame alone.
    assert pred.video_calls == 2 * 5 * 3 and pred.calls == 0 and pred.states == 2
    assert json.loads((tmp_path / "v.jsonl.settings.json").read_text())["video_cue"] is True
    single = VideoDiskPredictor()
    report_single = annotate_dataset(ds, single, tmp_path / "s.jsonl", candidates=3, seed=0, video_cue=False)
    assert single.video_calls == 0 and single.calls == 2 * 5 * 3
    # Same candidates, different masks: the 9 px disk fits the 18x22 box better than the 4 px one.
    assert report.mean_iou > report_single.mean_iou
    # Rows made one way are not extended the other way.
    with pytest.raises(ConfigError, match="video_cue: True -> False"):
        annotate_dataset(ds, VideoDiskPredictor(), out, candidates=3, seed=0, video_cue=False)
    # A backend without a video cue is recorded as such whatever was asked.
    annotate_dataset(ds, DiskPredictor(), tmp_path / "d.jsonl", candidates=3, seed=0)
    assert json.loads((tmp_path / "d.jsonl.settings.json").read_text())["video_cue"] is False


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) == (0, 1)
    for bad in ("3/2", "4/4", "-1/3", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


@needs_davis
def test_real_reader_input(tmp_path):
    from videomolmo.data import load_dataset

    ds = [s for s in load_dataset(DAVIS) if s.video_id == "car-shadow"]
    out = tmp_path / "davis.jsonl"
    annotate_dataset(ds, DiskPredictor(radius=40), out, candidates=2, frame_step=20)
    rows = [json.loads(x) for x in _lines(out)]
    assert {(r["exp_id"], r["frame_index"]) for r in rows} == {(s.exp_id, i) for s in ds for i in (0, 20)}
    for r in rows:
        s = next(s for s in ds if s.exp_id == r["exp_id"])
        x, y = r["point"]
        assert s.gt_mask(r["frame_index"])[int(y), int(x)] and r["obj_id"] == "1"


# ----------------------------------------------------------------------------- CLI


def _cli(args):
    from videomolmo.cli import app

    return CliRunner().invoke(app, ["annotate", *args])


def _tiny_refdavis(root: Path) -> Path:
    """A one-video, one-frame dataset in the Ref-DAVIS layout, so the option checks are reached
    whether or not davis16-mini is present."""
    from PIL import Image

    (root / "JPEGImages" / "v").mkdir(parents=True)
    (root / "Annotations" / "v").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(root / "JPEGImages" / "v" / "00000.jpg")
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 10:30] = 255
    Image.fromarray(mask).save(root / "Annotations" / "v" / "00000.png")
    meta = {"videos": {"v": {"expressions": {"0": {"exp": "the box", "obj_id": "1"}}, "frames": ["00000"]}}}
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    return root


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    out = str(tmp_path / "p.jsonl")
    r = _cli([str(tmp_path / "missing"), "--out", out])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    data = str(_tiny_refdavis(tmp_path / "data"))
    r = _cli([data, "--out", out, "--shard", "3/2"])
    assert r.exit_code == 2 and "--shard" in r.output
    r = _cli([data, "--out", out, "--candidates", "0"])
    assert r.exit_code == 2 and "--candidates" in r.output
    r = _cli([data, "--out", out, "--frame-step", "-1"])
    assert r.exit_code == 2 and "--frame-step" in r.output
    r = _cli([data, "--out", out, "--mask-backend", "gpu"])
    assert r.exit_code == 2 and "unknown mask backend 'gpu'" in r.output
    r = _cli([data, "--out", out, "--mask-backend", "sam2"])
    assert r.exit_code == 2 and "--mask-checkpoint" in r.output
    r = _cli([data, "--out", out, "--mask-backend", "sam2", "--mask-checkpoint", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_multi_object_expressions_get_one_point_per_object(tmp_path):
    from PIL import Image

    from videomolmo.annotation import object_masks
    from videomolmo.data.sample import PngMaskSource

    ids = np.zeros((40, 56), np.uint8)
    ids[5:20, 5:20] = 1
    ids[22:38, 30:50] = 2
    png = tmp_path / "00000.png"
    Image.fromarray(ids, mode="L").save(png)
    frames = np.zeros((1, 40, 56, 3), np.uint8)
    sample = FakeSample("v", "0", [1, 2], frames, None,
                        masks=PngMaskSource(((((str(png), 1), (str(png), 2))),)), frame_paths=[png])
    parts = object_masks(sample, 0)
    assert [o for o, _ in parts] == ["1", "2"]
    np.testing.assert_array_equal(parts[0][1], ids == 1)
    np.testing.assert_array_equal(parts[1][1], ids == 2)
    out = tmp_path / "p.jsonl"
    annotate_dataset([sample], DiskPredictor(radius=7), out, candidates=5)
    rows = [json.loads(x) for x in _lines(out)]
    assert [r["obj_id"] for r in rows] == ["1", "2"]
    for r in rows:
        x, y = r["point"]
        assert ids[int(y), int(x)] == int(r["obj_id"])


def test_a_split_without_ground_truth_is_a_clear_error(tmp_path):
    ds = _fake_dataset(n_videos=1)
    for s in ds:
        s.has_masks = False
    with pytest.raises(VideoMolmoError, match="no ground-truth masks"):
        annotate_dataset(ds, DiskPredictor(), tmp_path / "p.jsonl", candidates=3)
