"""SAM2 backend: per-frame cost and memory of `Sam2Predictor` against plain transformers usage.

No trained SAM2 weights can be fetched on the development machine, so this runs the tiny
random-initialised config (`tiny_sam2_config`) on CPU: it times our plumbing (preprocessing,
streaming, pruning, upsampling) relative to the library, not SAM2's accuracy.

Baseline, measured in the same process: the transformers way from its docs: every frame
preprocessed into one `Sam2VideoInferenceSession` up front, then `propagate_in_video_iterator`,
which keeps every frame and every per-frame output. Ours streams frames and prunes outputs
beyond the memory window. Reported: seconds per frame (ratio ours / baseline) and the bytes of
tensors the session holds after N and after 3N frames.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sam2.py [--frames 40] [--size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def session_bytes(session) -> int:
    """Bytes of every tensor a transformers SAM2 session holds (frames, outputs, feature cache)."""
    seen: set[int] = set()
    total = 0

    def walk(x) -> None:
        nonlocal total
        if isinstance(x, torch.Tensor):
            if id(x) not in seen:
                seen.add(id(x))
                total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(session.processed_frames or {})
    walk(session.output_dict_per_obj)
    walk(session.cache._vision_features)
    return total


def make_video(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        x = 10 + (t * 3) % (w - 60)
        frames[t, 40:100, x : x + 50] = 220
    return frames


def run_ours(pred, video: np.ndarray) -> tuple[float, int]:
    state = pred.init_state(video)
    pred.add_points(state, 0, 1, np.array([[35.0, 70.0]]))
    t0 = time.perf_counter()
    for _ in pred.propagate(state, 0, len(video) - 1):
        pass
    dt = (time.perf_counter() - t0) / len(video)
    return dt, session_bytes(state.extra["session"])


def run_baseline(pred, video: np.ndarray) -> tuple[float, int]:
    """Plain transformers: whole video in the session, library propagation, no pruning."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    h, w = video.shape[1:3]
    prep_start = time.perf_counter()
    pixels = torch.stack([pred.preprocess(f) for f in video])
    prep = time.perf_counter() - prep_start
    session = Sam2VideoInferenceSession(video=pixels, video_height=h, video_width=w, dtype=torch.float32)
    obj_idx = session.obj_id_to_idx(1)
    session.add_point_inputs(obj_idx, 0, pred._point_inputs(np.array([[35.0, 70.0]]), np.array([1]), w, h))
    session.obj_with_new_inputs = [1]
    with torch.inference_mode():
        pred.model(session, frame_idx=0)
    start = time.perf_counter()
    with torch.inference_mode():
        for out in pred.model.propagate_in_video_iterator(session, start_frame_idx=0):
            pred._to_masks(out.pred_masks, h, w)  # the same upsampling work ours does
    # Preprocessing counts: ours does it inside propagate, frame by frame.
    dt = (time.perf_counter() - start + prep) / len(video)
    return dt, session_bytes(session)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--size", type=int, default=128, help="SAM2 input size S of the tiny config")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=427)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    from transformers import Sam2VideoModel

    from videomolmo.segmentation.sam2 import Sam2Predictor, tiny_sam2_config

    with tempfile.TemporaryDirectory() as tmp:
        Sam2VideoModel(tiny_sam2_config(args.size)).save_pretrained(tmp)
        pred = Sam2Predictor.from_pretrained(tmp)

    n = args.frames
    short, long_ = make_video(n, args.height, args.width), make_video(3 * n, args.height, args.width)
    run_ours(pred, short[:4])  # warm-up (allocator, kernels)

    rows = []
    for name, video in ((f"N={n}", short), (f"3N={3 * n}", long_)):
        ours_t, ours_b = run_ours(pred, video)
        base_t, base_b = run_baseline(pred, video)
        rows.append((name, ours_t, base_t, ours_b, base_b))

    frame = short[0]
    t0 = time.perf_counter()
    pred.predict_image(frame, np.array([[35.0, 70.0]]))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    reps = 10
    for j in range(reps):
        pred.predict_image(frame, np.array([[35.0 + j, 70.0]]))
    cached = (time.perf_counter() - t0) / reps

    print(f"tiny SAM2 config, S={args.size}, video {args.width}x{args.height}, CPU, 1 thread")
    print(f"{'frames':>8} | {'ours s/frame':>12} | {'transformers s/frame':>20} | {'ratio':>5} | "
          f"{'ours state MB':>13} | {'transformers state MB':>21}")
    for name, ot, bt, ob, bb in rows:
        print(f"{name:>8} | {ot:12.4f} | {bt:20.4f} | {ot / bt:5.2f} | {ob / 2**20:13.2f} | {bb / 2**20:21.2f}")
    print(f"state growth N -> 3N: ours x{rows[1][3] / rows[0][3]:.2f}, transformers x{rows[1][4] / rows[0][4]:.2f}")
    print(f"predict_image: first call on a frame {first:.4f} s, further prompts on it {cached:.4f} s "
          f"(image features cached, x{first / cached:.1f})")


if __name__ == "__main__":
    main()
