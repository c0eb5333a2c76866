"""One-command GPU check: VideoMolmo-7B pointing and SAM2-large / SAM3 tracking speed and memory
with random weights (nothing to download), printed as one table and written as JSON.

    python benchmarks/gpu_check.py                  # on a CUDA GPU: full-size layouts, bf16
    python benchmarks/gpu_check.py --tiny           # the same code on CPU with tiny configs (CI)

What it measures (random weights, so only speed and memory mean anything):

- pointing: the full `videomolmo-7b` layout (Molmo-7B-D + temporal module) built on the device
  in bf16, `videomolmo.model.point_video` over `--frames` frames of `--size` px with the feature
  cache, batch 1 and batch `--batch`, exactly `--tokens` generated tokens per frame (EOS off:
  a trained model answers in about 40-60); seconds per frame and peak GPU memory;
- the same with the LLM's linear layers in 4-bit (bitsandbytes NF4), when bitsandbytes is
  installed and a CUDA GPU is present (else recorded as skipped, with the reason);
- mask tracking: `Sam2VideoModel` in the sam2.1-hiera-large layout at 1024 px and
  `Sam3TrackerVideoModel` in the facebook/sam3 layout at its native 1008 px, through the
  project's `sam2` / `sam3` backends: one point on frame 0, propagated over `--frames` frames;
  seconds per frame (the first, prompted frame excluded) and peak memory.

The paper reports 0.74 s/frame pointing and 0.81 s/frame total on an A100 with 4-bit weights.
Wall-clock time with `torch.cuda.synchronize()`; `--tiny` uses process-independent wall time
too (its numbers only prove the code runs). The prompt is tokenized as bytes (no Qwen2 tokenizer
files are needed), which makes the text part of the prompt a few dozen tokens longer than with
the real tokenizer; the image tokens, which dominate, are the same.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

PAPER = {"pointing_s_per_frame": 0.74, "total_s_per_frame": 0.81, "setting": "A100, 4-bit"}


def sam2_large_config(image_size: int = 1024) -> Any:
    """`Sam2VideoConfig` with facebook/sam2.1-hiera-large's shapes (Hiera-L: 144-wide, 2-6-36-4 blocks)."""
    from transformers import Sam2VideoConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    s = image_size
    backbone = Sam2HieraDetConfig(
        hidden_size=144, num_attention_heads=2, blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7], image_size=[s, s],
    )
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[1152, 576, 288, 144],
                              backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]])
    return Sam2VideoConfig(vision_config=vision, image_size=s)


def sam3_tracker_config() -> Any:
    """`Sam3TrackerVideoConfig()`: its defaults are facebook/sam3's tracker (ViT-L/14 at 1008 px)."""
    from transformers import Sam3TrackerVideoConfig

    return Sam3TrackerVideoConfig()


class Clock:
    """Wall time, synchronising CUDA so queued kernels are counted."""

    def __init__(self, device: Any):
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def __call__(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()


def _peak_reset(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: Any) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _video(frames: int, size: int) -> np.ndarray:
    """A bright square moving over noise: something for the encoders to look at."""
    rng = np.random.default_rng(0)
    v = rng.integers(0, 80, (frames, size, size, 3), dtype=np.uint8)
    box = size // 4
    for t in range(frames):
        x = (t * size // (2 * max(1, frames))) % (size - box)
        v[t, size // 3 : size // 3 + box, x : x + box] = 230
    return v


def bench_pointing(args, device, dtype, clock: Clock) -> dict:
    import torch

    from videomolmo.model import ByteTokenizer, ModelConfig, Processor, VideoMolmo, point_video
    from videomolmo.model.checkpoint import quantize_llm_

    cfg = ModelConfig.from_name("test-tiny" if args.tiny else "videomolmo-7b")
    torch.manual_seed(0)
    _peak_reset(device)
    t0 = clock()
    with torch.device(device):
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = VideoMolmo(cfg).eval()
        finally:
            torch.set_default_dtype(default)
    build_s = clock() - t0
    tok = ByteTokenizer(cfg.llm.vocab_size)
    tok.eos_token_id = -1  # never generated: every frame decodes exactly --tokens tokens
    proc = Processor(cfg, tok)
    video = _video(args.frames, args.size)
    query = "the dog running on the grass"
    params_b = sum(p.numel() for p in model.parameters()) / 1e9
    out: dict[str, Any] = {"layout": cfg.name, "params_billion": round(params_b, 4), "dtype": str(dtype),
                           "build_s": round(build_s, 2), "weights_gib": _peak_gib(device)}

    def run(batch: int) -> tuple[float, float | None]:
        point_video(model, proc, video[: min(2, len(video))], query, batch_size=1, max_new_tokens=2)  # warm-up
        _peak_reset(device)
        t = clock()
        point_video(model, proc, video, query, batch_size=batch, max_new_tokens=args.tokens)
        return (clock() - t) / len(video), _peak_gib(device)

    for name, batch in (("batch1", 1), (f"batch{args.batch}", args.batch)):
        s, peak = run(batch)
        out[name] = {"s_per_frame": s, "peak_gib": peak}
    try:
        import bitsandbytes  # noqa: F401
        have_bnb = True
    except ImportError:
        have_bnb = False
    if device.type != "cuda":
        out["4bit"] = {"skipped": "needs a CUDA GPU"}
    elif not have_bnb:
        out["4bit"] = {"skipped": "bitsandbytes not installed"}
    else:
        quantize_llm_(model, "4bit")
        s, peak = run(1)
        out["4bit"] = {"s_per_frame": s, "peak_gib": peak}
    return out


def bench_tracker(name: str, make_model: Callable[[], Any], predictor_cls: Any, image_size: int,
                  args, device, dtype, clock: Clock) -> dict:
    import torch

    torch.manual_seed(0)
    _peak_reset(device)
    with torch.device(device):
        model = make_model()
    predictor = predictor_cls(model, device=str(device), dtype=dtype)
    video = _video(args.frames, args.mask_size)
    c = args.mask_size / 2
    state = predictor.init_state(video)
    predictor.add_points(state, 0, 1, np.array([[c, c]]))
    times = []
    t = clock()
    for i, _ in predictor.propagate(state, 0, len(video) - 1):
        now = clock()
        if i > 0:  # frame 0 was already segmented when prompted
            times.append(now - t)
        t = now
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    return {"layout": name, "image_size": image_size, "frame_px": args.mask_size, "params_million": round(params_m, 1),
            "s_per_frame": float(np.mean(times)) if times else None, "peak_gib": _peak_gib(device)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on CPU (CI): proves the code runs")
    ap.add_argument("--device", default=None, help="default: cuda if available (required unless --tiny)")
    ap.add_argument("--frames", type=int, default=None, help="frames per run (default 16; 4 with --tiny)")
    ap.add_argument("--tokens", type=int, default=None, help="generated tokens per frame (default 48; 4 with --tiny)")
    ap.add_argument("--batch", type=int, default=8, help="the batched pointing run's batch size")
    ap.add_argument("--size", type=int, default=None, help="pointing frame size in px (default 480; 64 with --tiny)")
    ap.add_argument("--mask-size", type=int, default=None, help="tracking frame size in px (default 1024; 64 with --tiny)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/gpu_check[_tiny].json)")
    args = ap.parse_args(argv)
    import torch

    t = args.tiny
    args.frames = args.frames or (4 if t else 16)
    args.tokens = args.tokens or (4 if t else 48)
    args.size = args.size or (64 if t else 480)
    args.mask_size = args.mask_size or (64 if t else 1024)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not t and device.type != "cuda":
        raise SystemExit("gpu_check: no CUDA GPU here; run with --tiny for the CPU smoke run")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        torch.set_num_threads(1)
    clock = Clock(device)

    from transformers import Sam2VideoModel, Sam3TrackerVideoModel

    from videomolmo.segmentation.sam2 import Sam2Predictor, tiny_sam2_config
    from videomolmo.segmentation.sam3 import Sam3TrackerPredictor, tiny_sam3_tracker_config

    s2 = tiny_sam2_config(128) if t else sam2_large_config(1024)
    s3 = tiny_sam3_tracker_config(112) if t else sam3_tracker_config()
    result: dict[str, Any] = {
        "tiny": t, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": sys.version.split()[0],
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "device")},
        "paper": PAPER,
        "pointing": bench_pointing(args, device, dtype, clock),
        "sam2": bench_tracker("tiny" if t else "sam2.1-hiera-large", lambda: Sam2VideoModel(s2), Sam2Predictor,
                              s2.image_size, args, device, dtype, clock),
        "sam3": bench_tracker("tiny" if t else "facebook/sam3 tracker", lambda: Sam3TrackerVideoModel(s3),
                              Sam3TrackerPredictor, s3.image_size, args, device, dtype, clock),
    }
    p, m2, m3 = result["pointing"], result["sam2"], result["sam3"]
    best_point = p.get("4bit", {}).get("s_per_frame") or p["batch1"]["s_per_frame"]
    result["total_s_per_frame"] = {"with_sam2": best_point + m2["s_per_frame"], "with_sam3": best_point + m3["s_per_frame"],
                                   "rule": "pointing every frame (4-bit when measured, else batch 1) + tracking"}
    print(table(result))
    out = args.out or Path(__file__).resolve().parent / "results" / ("gpu_check_tiny.json" if t else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


def table(r: dict) -> str:
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.3f}"

    p = r["pointing"]
    b = f"batch{r['settings']['batch']}"
    dt = p["dtype"].replace("torch.", "").replace("bfloat16", "bf16").replace("float32", "fp32")
    rows = [(f"pointing {dt}, batch 1, cache", p["batch1"]["s_per_frame"], p["batch1"]["peak_gib"]),
            (f"pointing {dt}, {b.replace('batch', 'batch ')}, cache", p[b]["s_per_frame"], p[b]["peak_gib"])]
    four = p["4bit"]
    lines = [f"gpu_check ({'tiny configs, ' if r['tiny'] else ''}{r['device_name']}, {p['layout']}, "
             f"{r['settings']['frames']} frames, {r['settings']['tokens']} tokens/frame)",
             f"| {'stage':44s} | s/frame | peak GiB |", f"|{'-' * 46}|---------|----------|"]
    for name, s, g in rows:
        lines.append(f"| {name:44s} | {f(s):>7s} | {f(g):>8s} |")
    if "skipped" in four:
        lines.append(f"| {'pointing 4-bit (bitsandbytes)':44s} | skipped: {four['skipped']}")
    else:
        lines.append(f"| {'pointing 4-bit (bitsandbytes), batch 1':44s} | {f(four['s_per_frame']):>7s} | "
                     f"{f(four['peak_gib']):>8s} |")
    for key in ("sam2", "sam3"):
        m = r[key]
        lines.append(f"| {key + ' ' + m['layout'] + ' @ ' + str(m['image_size']) + ' px':44s} | "
                     f"{f(m['s_per_frame']):>7s} | {f(m['peak_gib']):>8s} |")
    tot = r["total_s_per_frame"]
    lines.append(f"| {'total, pointing + sam2 (every frame)':44s} | {f(tot['with_sam2']):>7s} |          |")
    lines.append(f"| {'total, pointing + sam3 (every frame)':44s} | {f(tot['with_sam3']):>7s} |          |")
    lines.append(f"paper: {r['paper']['pointing_s_per_frame']} s/frame pointing, "
                 f"{r['paper']['total_s_per_frame']} s/frame total ({r['paper']['setting']})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
