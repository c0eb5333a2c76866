"""Model speed on the tiny preset (CPU): temporal-module overhead, feature cache, batching.

All runs use `videomolmo.model.point_video` on the same clip (davis16-mini `dog`, 854x480
JPEGs; random frames if the folder is absent) with the same randomly initialised `tiny` model,
generating exactly `--tokens` tokens per frame (EOS disabled, so every variant does the same
decoding work; a trained model answers in ~40-60 tokens). Three comparisons, each a ratio
measured in this process:

1. temporal-module overhead per frame: the model with its cross-attention temporal module vs the
   same model with the module off (`temporal=False`), both with the feature cache, batch 8;
2. feature cache vs upstream-style re-encoding of the l=4 previous frames at every frame (k=1):
   ViT calls per frame and ViT time per frame (batch 1 for both, as upstream);
3. batched pointing (batch 8 and 16) vs one frame at a time, frames/s;
4. the patch-selection pointing head (`point_head="patch"`, the same weights plus the head):
   points read from the head vs from the text, batch 8.

Timing is process CPU time (`time.process_time`, torch pinned to one thread): on a machine
shared with other jobs it does not count the time spent waiting for a core. Variants alternate
for `--repeat` rounds and the fastest round of each counts. `--wall` uses wall-clock time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_model.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer, point_video

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "davis16-mini"


def load_clip(n: int) -> np.ndarray:
    folder = DATA / "JPEGImages" / "dog"
    if folder.is_dir():
        from PIL import Image

        files = sorted(folder.glob("*.jpg"))[:n]
        return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    print("davis16-mini not found: using random 480x854 frames")
    return np.random.default_rng(0).integers(0, 256, (n, 480, 854, 3), dtype=np.uint8)


class ViTTimer:
    """Wraps `model.encode_frames` to count frames and accumulate time spent in the ViT."""

    def __init__(self, model, clock) -> None:
        self.model, self.clock, self.seconds = model, clock, 0.0
        self._orig = model.encode_frames

        def timed(images):
            t0 = clock()
            out = self._orig(images)
            self.seconds += clock() - t0
            return out

        model.encode_frames = timed

    def reset(self) -> None:
        self.seconds = 0.0
        self.model.vision_frames = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wall", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    clock = time.perf_counter if args.wall else time.process_time

    cfg = ModelConfig.from_name("tiny")
    torch.manual_seed(0)
    model = VideoMolmo(cfg).eval()
    tok = build_tokenizer(cfg)
    tok.eos_token_id = -1  # never generated: every frame decodes exactly --tokens tokens
    proc = Processor(cfg, tok)
    # The same weights with a patch-selection head on top (its own init).
    with_head = VideoMolmo(cfg.replace(point_head="patch")).eval()
    with_head.load_state_dict(model.state_dict(), strict=False)
    video = load_clip(args.frames)
    T = len(video)
    timers = {id(model): ViTTimer(model, clock), id(with_head): ViTTimer(with_head, clock)}
    query = "the dog running on the grass"

    variants = {
        "temporal on, cache, batch 8": dict(batch_size=8),
        "temporal off, cache, batch 8": dict(batch_size=8, temporal=False),
        "cache, batch 1": dict(batch_size=1),
        "upstream re-encode, batch 1": dict(batch_size=1, feature_cache=False),
        "cache, batch 16": dict(batch_size=16),
        "head model, text decode, batch 8": dict(batch_size=8, point_decode="text", _model=with_head),
        "head model, patch decode, batch 8": dict(batch_size=8, point_decode="patch", _model=with_head),
    }
    best = {k: float("inf") for k in variants}
    vit_calls, vit_time = {}, {}
    texts = {}
    point_video(model, proc, video[:4], query, batch_size=4, max_new_tokens=4)  # warm-up
    for _ in range(args.repeat):
        for name, kw in variants.items():
            kw = dict(kw)
            m = kw.pop("_model", model)
            vit = timers[id(m)]
            vit.reset()
            t0 = clock()
            out = point_video(m, proc, video, query, max_new_tokens=args.tokens, **kw)
            dt = clock() - t0
            if dt < best[name]:
                best[name] = dt
                vit_time[name] = vit.seconds
            vit_calls[name] = m.vision_frames
            texts[name] = [f.text for f in out]
    # Same model, same frames: cache/batching must not change any answer.
    same = texts["cache, batch 1"] == texts["upstream re-encode, batch 1"] == texts["temporal on, cache, batch 8"] \
        == texts["cache, batch 16"]

    # The module's own cost, isolated from end-to-end noise: the connector path for a batch of 8
    # frames with and without the temporal fusion (context mean included).
    with torch.no_grad():
        feats = model.encode_frames(torch.from_numpy(np.stack([proc.encode_image(f).crops for f in video[:8]])))
        masks = torch.from_numpy(np.stack([proc.encode_image(video[0]).image_masks] * 8))
        ctx_list = [feats] * cfg.context_frames

        def with_module():
            model.image_features(feats, masks, torch.stack(ctx_list).mean(0))

        def without():
            model.image_features(feats, masks, None, use_temporal=False)

        module_cost = {}
        for name, fn in (("on", with_module), ("off", without)):
            fn()
            runs = []
            for _ in range(5):
                t0 = clock()
                for _ in range(20):
                    fn()
                runs.append((clock() - t0) / 20 / 8)
            module_cost[name] = min(runs)
    unit = "wall" if args.wall else "CPU"
    print(f"tiny preset, {T} frames of {video.shape[2]}x{video.shape[1]}, {args.tokens} tokens/frame, "
          f"1 thread, best of {args.repeat} ({unit} time)")
    for name in variants:
        print(f"  {name:32s} {best[name] / T * 1000:8.1f} ms/frame  {T / best[name]:6.2f} frames/s  "
              f"ViT {vit_calls[name] / T:.2f} frames/frame, {vit_time[name] / T * 1000:6.1f} ms/frame")
    on, off = best["temporal on, cache, batch 8"], best["temporal off, cache, batch 8"]
    print(f"temporal-module overhead per frame: {100 * (on / off - 1):+.1f}% end to end (goal <= 3%); "
          f"the module alone: {1000 * (module_cost['on'] - module_cost['off']):.2f} ms/frame = "
          f"{100 * (module_cost['on'] - module_cost['off']) / (off / T):.1f}% of a frame")
    up, ca = "upstream re-encode, batch 1", "cache, batch 1"
    print(f"feature cache: ViT frames per frame {vit_calls[up] / T:.2f} -> {vit_calls[ca] / T:.2f} "
          f"({vit_calls[up] / vit_calls[ca]:.2f}x fewer); ViT time {vit_time[up] / vit_time[ca]:.2f}x less; "
          f"end to end {best[up] / best[ca]:.2f}x faster")
    one = best["cache, batch 1"]
    print(f"batching: batch 8 {one / on:.2f}x, batch 16 {one / best['cache, batch 16']:.2f}x the frames/s of batch 1")
    print(f"identical answers across cache / batching variants: {same}")
    text_d, patch_d = best["head model, text decode, batch 8"], best["head model, patch decode, batch 8"]
    print(f"patch-selection decoding: {100 * (patch_d / text_d - 1):+.1f}% per frame vs reading the text "
          f"(same model, batch 8)")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
