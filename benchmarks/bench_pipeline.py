"""End-to-end pipeline: flat memory in video length, and where the time goes.

A long clip is built from a davis16-mini sequence played forwards and backwards (ping-pong, so
the object moves continuously) at reduced resolution, written as an mp4, and tracked with the
CPU mask backend and oracle points (from the ground truth, so no model weights are needed):

* memory: each run is a fresh child process; its peak RSS (ru_maxrss) is compared between a
  short and a 4x longer clip, for `track` (streamed: `Pipeline(...)(...).save(...)`) and for the
  baseline that materialises the video and the masks first (what a 100-frame-capped,
  load-everything implementation does);
* time: CPU seconds per frame (process time: the machine is shared, wall time is noise) for the mask stage alone (`result.masks()`), and for the full `save`
  (masks + PNGs + overlay mp4), measured in the same process; their ratio is the output overhead.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pipeline.py [--video blackswan] [--frames 40] [--scale 0.5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
DAVIS = ROOT / ".." / "shared" / "data" / "davis16-mini"


def build_clip(video: str, n: int, scale: float, out: Path) -> tuple[Path, Path]:
    """Ping-pong `n` frames of a davis16-mini sequence into an mp4 + a folder of GT masks."""
    import cv2

    from videomolmo.video import write_video

    frames = sorted((DAVIS / "JPEGImages" / video).glob("*.jpg"))
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    idx = [order[i % len(order)] for i in range(n)]
    gt_dir = out / f"gt-{n}"
    gt_dir.mkdir(parents=True, exist_ok=True)

    def gen():
        for t, i in enumerate(idx):
            img = cv2.cvtColor(cv2.imread(str(frames[i])), cv2.COLOR_BGR2RGB)
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            m = cv2.imread(str(DAVIS / "Annotations" / video / (frames[i].stem + ".png")), cv2.IMREAD_GRAYSCALE)
            m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(gt_dir / f"{t:05d}.png"), m)
            yield img

    path = out / f"clip-{n}.mp4"
    write_video(path, gen(), fps=24)
    return path, gt_dir


CHILD = r"""
import json, resource, sys, time
import numpy as np, cv2
from pathlib import Path
from videomolmo.pipeline import Pipeline, PipelineConfig
from videomolmo.pointers.oracle import OraclePointer
from videomolmo.video import open_video

mode, clip, gt_dir, out, k = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
gt = lambda i: cv2.imread(str(gt_dir / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
pipe = Pipeline(OraclePointer(gt), PipelineConfig(k=k))
t0 = time.process_time()
if mode == "stream":
    video = open_video(clip)
    res = pipe(video, "the object")
    res.save(out)
else:  # baseline: everything in memory first
    video = open_video(clip)
    frames = np.stack(list(video))
    res = pipe(frames, "the object")
    masks = [m for _, m in res.masks()]
    from videomolmo import render
    render.render((render.OverlayFrame(frames[i], i, masks[i], res.points.get(i)) for i in range(len(frames))),
                  video_path=out / "overlay.mp4", query="the object", num_frames=len(frames))
dt = time.process_time() - t0
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": dt}))
"""


def child(mode: str, clip: Path, gt: Path, out: Path, k: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(clip), str(gt), str(out), str(k)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default="blackswan")
    ap.add_argument("--frames", type=int, default=40, help="short clip length; the long one is 4x")
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    if not DAVIS.is_dir():
        sys.exit(f"{DAVIS}: davis16-mini not found")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n1, n2 = args.frames, 4 * args.frames
        c1, g1 = build_clip(args.video, n1, args.scale, tmp)
        c2, g2 = build_clip(args.video, n2, args.scale, tmp)
        res = {}
        for mode in ("stream", "baseline"):
            for n, c, g in ((n1, c1, g1), (n2, c2, g2)):
                res[(mode, n)] = child(mode, c, g, tmp / f"{mode}-{n}", args.k)
                print(f"{mode:8s} {n:4d} frames: peak RSS {res[(mode, n)]['rss_mb']:7.1f} MB, "
                      f"{res[(mode, n)]['seconds'] / n:.3f} CPU s/frame", flush=True)
        s = res[("stream", n2)]["rss_mb"] / res[("stream", n1)]["rss_mb"]
        b = res[("baseline", n2)]["rss_mb"] / res[("baseline", n1)]["rss_mb"]
        print(f"peak RSS {n2}/{n1} frames: streamed x{s:.2f}, load-everything baseline x{b:.2f}")

        # Time split, in this process, on the long clip.
        import cv2

        from videomolmo.pipeline import Pipeline, PipelineConfig
        from videomolmo.pointers.oracle import OraclePointer
        from videomolmo.video import open_video

        gt = lambda i: cv2.imread(str(g2 / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0  # noqa: E731
        pipe = Pipeline(OraclePointer(gt), PipelineConfig(k=args.k))
        r = pipe(open_video(c2), "the object")
        t0 = time.process_time()
        for _ in r.masks():
            pass
        t_masks = time.process_time() - t0
        t0 = time.process_time()
        r.save(tmp / "timed")
        t_save = time.process_time() - t0
        print(f"mask stage {t_masks / n2:.3f} s/frame; full save (masks + PNGs + overlay.mp4) "
              f"{t_save / n2:.3f} s/frame; output overhead x{t_save / t_masks:.2f}")


if __name__ == "__main__":
    main()
