"""Video input: files (PyAV), frame folders, arrays; random access, streaming, writing, errors."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videomolmo.errors import ConfigError, VideoError, VideoMolmoError
from videomolmo.video import (
    ArrayVideo,
    FileVideo,
    FolderVideo,
    natural_key,
    open_video,
    write_video,
)
from conftest import DAVIS, needs_davis  # noqa: E402



def moving_frames(n: int, w: int = 64, h: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Frames whose content identifies the index (a bar moving down, brightness ramp)."""
    rng = np.random.default_rng(seed)
    # Smooth texture (8x8 blocks): pixel noise would be destroyed by 4:2:0 chroma subsampling.
    coarse = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), np.uint8))[:h, :w]
    out = []
    for i in range(n):
        f = (texture // 4 + (i * 3) % 160).astype(np.uint8)
        f[(i * 2) % h, :, :] = 255
        out.append(f)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """An H.264 mp4 with B-frames and a keyframe every 8 frames: seeking has work to do."""
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    frames = moving_frames(90)
    assert write_video(path, frames, fps=24, gop=8, preset="fast", crf=18) == 90
    return path, frames


# ----------------------------------------------------------------------- arrays and folders


def test_natural_sort_key():
    names = ["10.jpg", "2.jpg", "1.jpg", "frame_11.png", "frame_9.png"]
    assert sorted(names, key=natural_key) == ["1.jpg", "2.jpg", "10.jpg", "frame_9.png", "frame_11.png"]


def test_array_and_list_sources():
    frames = np.stack(moving_frames(7))
    for src in (frames, list(frames)):
        v = open_video(src)
        assert isinstance(v, ArrayVideo)
        assert len(v) == 7 and v.size == (64, 48) and (v.width, v.height) == (64, 48)
        assert v.fps == 30.0 and v.frame_names[:2] == ["00000", "00001"]
        assert np.array_equal(v[-1], frames[6]) and np.array_equal(v[2], frames[2])
        assert [i for i, _ in v.iter_frames([5, 1, 5, -1])] == [1, 5, 6]
        assert len(list(v)) == 7
        with pytest.raises(IndexError):
            v[7]
        with pytest.raises(IndexError):
            v[-8]
    assert open_video(frames, fps=12.5).fps == 12.5
    assert open_video(frames).sample_indices(3) == [0, 3, 6]
    assert open_video(frames).sample_indices(1) == list(range(7))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError):
            open_video(frames).sample_indices(bad)


def test_array_bad_input():
    with pytest.raises(VideoError, match="uint8"):
        open_video(np.zeros((3, 8, 8, 3), np.float32))
    with pytest.raises(VideoError, match="frame 1"):
        open_video([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    with pytest.raises(VideoError, match="no frames"):
        open_video([])
    with pytest.raises(ConfigError):
        open_video(np.zeros((1, 8, 8, 3), np.uint8), fps=0)


def test_folder_natural_order_png_and_names(tmp_path):
    for i, name in enumerate(["10", "2", "1"]):
        Image.fromarray(np.full((6, 10, 3), int(name), np.uint8)).save(tmp_path / f"{name}.png")
    Image.fromarray(np.full((6, 10), 3, np.uint8), mode="L").save(tmp_path / "3.png")  # gray -> RGB
    (tmp_path / "notes.txt").write_text("ignored")
    v = open_video(tmp_path)
    assert isinstance(v, FolderVideo)
    assert v.frame_names == ["1", "2", "3", "10"]
    assert [int(f[0, 0, 0]) for f in v] == [1, 2, 3, 10]
    assert v[2].shape == (6, 10, 3) and v[2].dtype == np.uint8
    assert open_video(str(tmp_path), fps=6).fps == 6.0


@needs_davis
def test_davis_frame_folder():
    folder = DAVIS / "JPEGImages" / "dog"
    with open_video(folder) as v:
        assert len(v) == 60 and v.size == (854, 480) and v.fps == 30.0
        assert v.frame_names[0] == "00000" and v.frame_names[-1] == "00059"
        expected = np.asarray(Image.open(folder / "00059.jpg").convert("RGB"))
        assert np.array_equal(v[-1], expected)
        assert v.sample_indices(25) == [0, 25, 50]


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="empty.*no .jpg"):
        open_video(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad / "00000.jpg")
    (bad / "00001.jpg").write_bytes(b"not a jpeg")
    v = open_video(bad)
    v[0]
    with pytest.raises(VideoError, match=r"00001\.jpg: unreadable frame image"):
        v[1]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(mixed / "a1.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(mixed / "a2.png")
    with pytest.raises(VideoError, match=r"a2\.png: frame is 5x4 but a1\.png is 4x4"):
        list(open_video(mixed))
    with pytest.raises(VideoError, match=r"a2\.png"):
        FolderVideo(mixed, check_sizes=True)


# ----------------------------------------------------------------------- files


def test_file_round_trip_and_metadata(gop_video):
    path, frames = gop_video
    with open_video(path) as v:
        assert isinstance(v, FileVideo)
        assert len(v) == 90 and v.size == (64, 48) and v.fps == pytest.approx(24.0)
        assert v.frame_names[-1] == "00089"
        decoded = list(v)
    assert len(decoded) == 90
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for f in decoded)
    # Every decoded frame is closest to its own source frame: order and count are right.
    for i in (0, 1, 44, 89):
        errs = [np.abs(decoded[i].astype(int) - frames[j]).mean() for j in range(90)]
        assert int(np.argmin(errs)) == i
    assert min(psnr(a, b) for a, b in zip(decoded, frames)) > 30


def test_random_access_matches_sequential_decode(gop_video):
    path, _ = gop_video
    with open_video(path) as v:
        seq = list(v)
        rng = np.random.default_rng(1)
        order = [89, 0, 45, 44, 46, 8, 7, -1, -90, *rng.integers(0, 90, 25).tolist()]
        for i in order:
            assert np.array_equal(v[i], seq[i]), i
        with pytest.raises(IndexError):
            v[90]


def test_iter_frames_exact_and_seeks_only_when_it_pays(gop_video):
    path, _ = gop_video
    with open_video(path) as v:
        seq = list(v)
        wanted = [3, 4, 5, 60, 61, 89]
        v.stats.update(decoded=0, seeks=0)
        got = list(v.iter_frames([89, 61, 3, 4, 5, 60, 4]))
        assert [i for i, _ in got] == wanted
        assert all(np.array_equal(f, seq[i]) for i, f in got)
        keyframes = v._index.keyframes
        assert len(keyframes) >= 8  # gop=8 over 90 frames
        # Decoded: 0..5 from the start, then from the keyframe before 60 and before 89 (if it
        # lies past 61): far fewer than the 90 a full decode needs.
        k60 = max(k for k in keyframes if k <= 60)
        k89 = max(k for k in keyframes if k <= 89)
        expected = 6 + (61 - k60 + 1) + (89 - k89 + 1 if k89 > 62 else 89 - 61)
        assert v.stats["decoded"] == expected
        assert v.stats["seeks"] == 3
        # Consecutive frames never seek again.
        v.stats.update(decoded=0, seeks=0)
        assert len(list(v.iter_frames(range(10, 30)))) == 20
        assert v.stats["seeks"] == 1


@pytest.mark.parametrize("suffix", [".webm", ".avi", ".mov", ".mkv"])
def test_other_containers(tmp_path, suffix):
    frames = moving_frames(12, w=32, h=24)
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames, fps=10, gop=4)
    with open_video(path) as v:
        assert len(v) == 12 and v.size == (32, 24) and v.fps == pytest.approx(10.0)
        seq = list(v)
        assert np.array_equal(v[7], seq[7]) and np.array_equal(v[2], seq[2])
        assert min(psnr(a, b) for a, b in zip(seq, frames)) > 22


def test_count_without_container_metadata(tmp_path):
    # Matroska stores no per-stream frame count: the count comes from the packet index.
    path = tmp_path / "clip.mkv"
    write_video(path, moving_frames(17, w=32, h=24), fps=5)
    v = open_video(path)
    assert v.metadata_frames == 0 and len(v) == 17 and len(list(v)) == 17


def test_streaming_does_not_retain_frames(tmp_path):
    """2000 frames stream through with only a small window alive at any time."""
    path = tmp_path / "long.mp4"
    n = 2000
    write_video(path, (f for i in range(n // 20) for f in moving_frames(20, w=96, h=64, seed=i)), preset="ultrafast")
    v = open_video(path)
    assert len(v) == n
    alive: list[weakref.ref] = []
    max_alive = 0
    count = 0
    for frame in v:
        alive.append(weakref.ref(frame))
        count += 1
        if count % 100 == 0:
            gc.collect()
            max_alive = max(max_alive, sum(r() is not None for r in alive))
            alive = [r for r in alive if r() is not None]
    del frame
    assert count == n
    assert max_alive <= 2  # the frame in hand (and at most the previous one)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_streaming_full_size_memory_is_flat(tmp_path):
    """854x480 frames: resident memory stays flat while iterating (retaining would add ~1.2 MB/frame)."""
    path = tmp_path / "big.mp4"
    n = 240
    base = moving_frames(1, w=854, h=480)[0]
    write_video(path, (np.roll(base, 4 * i, axis=1) for i in range(n)), preset="ultrafast", crf=30)
    v = open_video(path)
    it = iter(v)
    for _ in range(10):
        next(it)
    start = _rss_mb()
    peak = start
    for k, _frame in enumerate(it):
        if k % 10 == 0:
            peak = max(peak, _rss_mb())
    # Keeping 230 frames would add ~280 MB; a streaming decoder stays within tens of MB.
    assert peak - start < 60, (start, peak)


def test_write_odd_size_is_padded(tmp_path):
    frames = [np.full((25, 31, 3), 200, np.uint8)] * 3
    path = tmp_path / "odd.mp4"
    assert write_video(path, iter(frames)) == 3
    v = open_video(path)
    assert v.size == (32, 26)
    assert np.abs(v[0][:25, :31].astype(int) - 200).max() <= 3
    assert np.abs(v[0][25, :31].astype(int) - 200).max() <= 3  # replicated edge row


def test_write_errors_leave_no_file(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(VideoError, match="no frames"):
        write_video(path, [])
    with pytest.raises(VideoError, match="frame 1 is"):
        write_video(path, [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)])
    with pytest.raises(VideoError, match="uint8"):
        write_video(path, [np.zeros((8, 8), np.uint8)])
    with pytest.raises(VideoError, match="extension"):
        write_video(tmp_path / "noext", [np.zeros((8, 8, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []


def test_file_errors_name_the_file(tmp_path):
    cases = {}
    cases["missing.mp4"] = None
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases["empty.mp4"] = "empty file"
    (tmp_path / "text.mp4").write_text("hello, not a video")
    cases["text.mp4"] = "not a readable video"
    import av

    with av.open(str(tmp_path / "zero.avi"), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        c.start_encoding()
    cases["zero.avi"] = "zero frames"
    for name, problem in cases.items():
        with pytest.raises(VideoMolmoError) as info:
            open_video(tmp_path / name)
        assert isinstance(info.value, VideoError)
        msg = str(info.value)
        assert name in msg and "\n" not in msg
        if problem:
            assert problem in msg
    with pytest.raises(VideoError, match="no such video file"):
        open_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="cannot open a video from a int"):
        open_video(3)  # type: ignore[arg-type]


def test_truncated_matroska_reads_what_is_there(tmp_path):
    path = tmp_path / "full.mkv"
    write_video(path, moving_frames(40, w=64, h=48), fps=10, preset="ultrafast")
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    v = open_video(cut)
    assert 0 < len(v) < 40
    assert len(list(v)) == len(v)


def test_cached_frames_are_private_copies(gop_video):
    path, _ = gop_video
    v = open_video(path)
    a = v[10]
    a[:] = 0  # a caller drawing on its frame
    assert np.array_equal(v[10], list(v.iter_frames([10]))[0][1])
    assert v[10].any()


def test_file_video_pickles_for_worker_processes(gop_video):
    import pickle

    path, _ = gop_video
    v = open_video(path)
    first = v[5]
    clone = pickle.loads(pickle.dumps(v))
    assert len(clone) == len(v) and clone.fps == v.fps and np.array_equal(clone[5], first)
    assert np.array_equal(clone[40], v[40])


def test_random_access_from_threads(gop_video):
    from concurrent.futures import ThreadPoolExecutor

    path, _ = gop_video
    v = open_video(path)
    seq = list(v)
    idx = np.random.default_rng(3).integers(0, 90, 40).tolist()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: v[i], idx))
    assert all(np.array_equal(g, seq[i]) for g, i in zip(got, idx))


def test_probe_command(gop_video, tmp_path):
    import json

    from typer.testing import CliRunner

    from videomolmo.cli import app

    path, _ = gop_video
    result = CliRunner().invoke(app, ["probe", str(path), "--decode", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["frames"] == info["decoded_frames"] == 90 and info["width"] == 64 and info["kind"] == "file"
    (tmp_path / "bad.mp4").write_text("nope")
    result = CliRunner().invoke(app, ["probe", str(tmp_path / "bad.mp4")])
    assert result.exit_code == 2 and "bad.mp4" in result.output and "Traceback" not in result.output


def test_raw_stream_without_timestamps(tmp_path):
    """A raw .h264 stream has no packet timestamps and cannot seek: count and read by decoding."""
    import av

    frames = moving_frames(20, w=32, h=24)
    path = tmp_path / "raw.h264"
    with av.open(str(path), "w", format="h264") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    v = open_video(path)
    assert v._index is None and len(v) == 20
    seq = list(v)
    assert len(seq) == 20
    for i in (19, 3, 10, 0, 5):
        assert np.array_equal(v[i], seq[i])


def test_list_of_image_paths_keeps_given_order(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((6, 8, 3), 10 * i, np.uint8)).save(tmp_path / f"{i}.png")
    paths = [tmp_path / "3.png", str(tmp_path / "1.png")]
    v = open_video(paths, fps=5)
    assert v.frame_names == ["3", "1"] and v.fps == 5.0 and len(v) == 2
    assert [int(f[0, 0, 0]) for f in v] == [30, 10]
    with pytest.raises(VideoError, match=r"9\.png: frame image does not exist"):
        open_video([tmp_path / "0.png", tmp_path / "9.png"])
