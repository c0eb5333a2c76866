"""Video decoding: streaming memory, decode speed and sparse/random access against plain PyAV.

Writes a synthetic 854x480 H.264 clip (default 2000 frames, keyframe every 30) and measures, in
this one process, `videomolmo.video` against the straightforward PyAV code a user would write:

1. streaming: peak resident memory while iterating all frames, vs. decoding into a list;
2. sequential speed: `for f in open_video(p)` vs. `frame.to_ndarray(format="rgb24")` per frame;
3. every-10th-frame sampling: `iter_frames(sample_indices(10))` vs. decoding everything and
   keeping every 10th frame;
4. random access: `v[i]` for random indices vs. decoding from the start for each index;
5. a DAVIS frame folder (if ../shared/data/davis16-mini is present): iterating `open_video(dir)`
   vs. a PIL loop over the sorted JPEGs.

Memory is measured in fresh subprocesses (Linux /proc: VmRSS after imports, then the peak
VmHWM after resetting it).

    .venv/bin/python benchmarks/bench_video_decode.py [--frames 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_clip(path: Path, frames: int, width: int = 854, height: int = 480) -> None:
    from videomolmo.video import write_video

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    base = np.kron(coarse, np.ones((16, 16, 1), np.uint8))[:height, :width]

    def gen():
        for i in range(frames):
            yield np.roll(base, 3 * i, axis=1)

    write_video(path, gen(), fps=30, preset="ultrafast", crf=28, gop=30)


# --------------------------------------------------------------------------- memory (subprocess)

_MEM_CHILD = r"""
import json, sys
import numpy as np
mode, path = sys.argv[1], sys.argv[2]
import av
from videomolmo.video import open_video
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
# Baseline after imports only: the growth below includes the decoder's own buffers. Writing 5
# to clear_refs resets the peak (VmHWM) so import-time transients do not hide the growth.
base = status("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
n = 0
if mode == "stream":
    checksum = 0
    for frame in open_video(path):
        checksum += int(frame[0, 0, 0]); n += 1
elif mode == "list":
    c = av.open(path)
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    n = len(frames)
peak = status("VmHWM")
print(json.dumps({"frames": n, "growth_mb": (peak - base) / 1024, "base_mb": base / 1024}))
"""


def memory(mode: str, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _MEM_CHILD, mode, str(path)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- speed (this process)


def naive_iter(path: Path):
    import av

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def naive_frame(path: Path, index: int) -> np.ndarray:
    """Decode from the start up to `index`: what one does without an index or seeking."""
    import av

    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")
    raise IndexError(index)


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--random", type=int, default=20, help="random-access look-ups to time")
    args = ap.parse_args()

    from videomolmo.video import open_video

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        t_write, _ = timed(lambda: make_clip(path, args.frames))
        frame_mb = 854 * 480 * 3 / 2**20
        print(f"clip: {args.frames} frames 854x480 H.264 (gop 30), {path.stat().st_size / 1e6:.1f} MB, "
              f"written in {t_write:.1f} s")

        stream, listed = memory("stream", path), memory("list", path)
        print(f"[memory] after imports: {stream['base_mb']:.0f} MB RSS")
        print(f"[memory] iterate open_video: +{stream['growth_mb']:.0f} MB peak RSS "
              f"({stream['growth_mb'] / frame_mb:.1f} frames' worth) over {stream['frames']} frames")
        print(f"[memory] decode into a list : +{listed['growth_mb']:.0f} MB peak RSS")
        print(f"[memory] ratio list / stream: {listed['growth_mb'] / max(stream['growth_mb'], 1.0):.0f}x")

        t_open, v = timed(lambda: open_video(path))
        t_ours, n_ours = timed(lambda: sum(1 for _ in v))
        t_naive, n_naive = timed(lambda: sum(1 for _ in naive_iter(path)))
        assert n_ours == n_naive == args.frames
        print(f"[sequential] open (packet index) {t_open * 1e3:.0f} ms; open_video {n_ours / t_ours:.0f} fps, "
              f"naive PyAV to_ndarray {n_naive / t_naive:.0f} fps: {t_naive / t_ours:.2f}x faster")

        wanted = v.sample_indices(10)
        t_ours, got = timed(lambda: [i for i, _ in v.iter_frames(wanted)])
        t_naive, naive_got = timed(lambda: [i for i, _ in enumerate(naive_iter(path)) if i % 10 == 0])
        assert got == naive_got
        print(f"[every 10th] iter_frames {t_ours:.2f} s vs decode-all-and-skip {t_naive:.2f} s: "
              f"{t_naive / t_ours:.2f}x faster")

        rng = np.random.default_rng(0)
        idx = rng.integers(0, args.frames, args.random).tolist()
        v.close()
        v = open_video(path)
        v.stats.update(decoded=0, seeks=0)
        t_ours, ours = timed(lambda: [v[i] for i in idx])
        t_naive, naive = timed(lambda: [naive_frame(path, i) for i in idx])
        assert all(np.array_equal(a, b) for a, b in zip(ours, naive)), "random access differs from a full decode"
        print(f"[random] {args.random} look-ups: v[i] {t_ours / len(idx) * 1e3:.0f} ms each "
              f"({v.stats['decoded'] / len(idx):.0f} frames decoded per look-up), decode-from-start "
              f"{t_naive / len(idx) * 1e3:.0f} ms each: {t_naive / t_ours:.1f}x faster, identical frames")

    folder = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "davis16-mini" / "JPEGImages" / "dog"
    if folder.is_dir():
        from PIL import Image

        def pil_loop():
            out = 0
            for p in sorted(folder.glob("*.jpg")):
                with Image.open(p) as im:
                    out += int(np.asarray(im.convert("RGB"))[0, 0, 0])
            return out

        def ours():
            return sum(int(f[0, 0, 0]) for f in open_video(folder))

        pil_loop(), ours()  # warm the page cache for both
        t_pil, a = timed(pil_loop)
        t_ours, b = timed(ours)
        assert a == b
        n = len(open_video(folder))
        print(f"[folder] davis16-mini/dog ({n} JPEGs 854x480): open_video {n / t_ours:.0f} fps, "
              f"PIL loop {n / t_pil:.0f} fps: {t_pil / t_ours:.2f}x faster, same pixels")


if __name__ == "__main__":
    main()
