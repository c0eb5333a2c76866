"""Issue 11, item 2: short controlled experiments on why the ViT does not learn shape.

Trains the tiny ViT on single-frame synthetic clips with a chosen set of per-token losses
and reports held-out (val) per-patch shape accuracy of the linear head, as `evaluate_shape`
measures it (patches >= 50 % covered by one sprite), plus colour accuracy. Diagnostic only:

    PYTHONPATH=src python benchmarks/diag_shape.py --init src/videomolmo/assets/tiny-videomolmo.safetensors \
        --steps 150 --batch 64 --w shape=1,geometry=1 --threads 1

Loss names (`--w name=weight,...`): shape (linear per-token CE on covered patches), colour,
geometry (the token's own 14x14 mask), nbr (the owner sprite's mask over the 3x3-patch
neighbourhood, 42x42 px at half resolution), centred (the owner sprite's visible mask in a
32x32 window centred on the sprite, at half resolution), mlp (an MLP shape probe on the
*detached* features: reads whether shape is there nonlinearly, does not train the ViT).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.synth import COLOURS, SHAPES, SynthConfig, clip_rng, generate_clip
from videomolmo.training.pretrain_vision import (
    VisionPretrainConfig, _load_vit_state, build_vision, dense_targets, normalize_frames,
    patch_features, sincos_2d, shape_targets)


def batch(rng, synth, n, cfg):
    clips = [generate_clip(rng, synth) for _ in range(n)]
    return collate(clips, cfg)


def collate(clips, cfg):
    tg = [dense_targets(c, 14, cfg.owner_min_fraction) for c in clips]
    out = {k: torch.from_numpy(np.stack([t[k] for t in tg]))[:, 0] if tg[0][k].ndim >= 3 and k != "sprite_cover"
           else torch.from_numpy(np.stack([t[k] for t in tg])) for k in tg[0]}
    extra = [shape_targets(c, 14) for c in clips]
    for k in extra[0]:
        out[k] = torch.from_numpy(np.stack([e[k] for e in extra]))[:, 0]
    frames = np.stack([c.frames[0] for c in clips])
    return normalize_frames(frames), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", default=None)
    ap.add_argument("--sincos", action="store_true")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--w", default="shape=1,geometry=1")
    ap.add_argument("--freeze", action="store_true", help="freeze the ViT (probe only)")
    ap.add_argument("--eval-clips", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-radius", type=float, default=None, help="curriculum: larger sprites")
    ap.add_argument("--train-cover", type=float, default=0.5, help="shape CE on patches with cover >= this")
    ap.add_argument("--sprites", default="2,8", help="min,max sprites of the training clips")
    ap.add_argument("--fixed", type=int, default=0, help="train on a fixed pool of N clips (overfitting check)")
    ap.add_argument("--clean", action="store_true",
                    help="flat backgrounds and no pixel noise, for training and evaluation (diagnostic)")
    ap.add_argument("--out", default=None, help="append the result (JSON line) to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.clean:
        import videomolmo.synth as synth_mod

        def flat(rng, h, w):
            return np.broadcast_to(rng.uniform(40, 200, size=3).astype(np.float32), (h, w, 3)).copy()
        synth_mod._background = flat
    torch.manual_seed(a.seed)
    w = {k: float(v) for k, v in (p.split("=") for p in a.w.split(",") if p)}
    cfg = VisionPretrainConfig.from_name("tiny")
    vit = build_vision(cfg.vision)
    if a.init:
        vit.load_state_dict(_load_vit_state(a.init), strict=False)
    if a.sincos:
        with torch.no_grad():
            pe = vit.embeddings.position_embedding.weight
            pe.zero_()
            pe[1:] = sincos_2d(8, pe.shape[1])
    layers = tuple(cfg.feature_layers)
    dim = cfg.vision["hidden_size"] * len(layers)
    nc, ns = len(COLOURS) + 1, len(SHAPES) + 1
    heads = nn.ModuleDict(dict(
        norm=nn.LayerNorm(dim), static=nn.Linear(dim, nc + ns), geometry=nn.Linear(dim, 196),
        nbr=nn.Linear(dim, 21 * 21), centred=nn.Linear(dim, 16 * 16),
        mlp=nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 512), nn.GELU(), nn.Linear(512, ns))))
    params = list(heads.parameters()) + ([] if a.freeze else list(vit.parameters()))
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.01)
    rng = np.random.default_rng(a.seed)
    rr = (7.0, 12.0) if a.min_radius is None else (a.min_radius, 12.0)
    lo, hi = (int(v) for v in a.sprites.split(","))
    synth = SynthConfig(frames=1, kind_weights=(1, 0, 0, 0, 0), radius_range=rr, min_sprites=lo, max_sprites=hi,
                        noise_std=0.0 if a.clean else 6.0)
    esynth = SynthConfig(frames=1, kind_weights=(1, 0, 0, 0, 0), noise_std=0.0 if a.clean else 6.0)
    eval_set = [collate([generate_clip(clip_rng(0, "val", i), esynth) for i in range(s, min(a.eval_clips, s + 50))], cfg)
                for s in range(0, a.eval_clips, 50)]

    def features(x):
        if a.freeze:
            with torch.no_grad():
                return patch_features(vit, x, layers)
        return patch_features(vit, x, layers)

    @torch.no_grad()
    def evaluate():
        vit.eval()
        hit = tot = chit = ctot = mhit = 0
        for x, t in eval_set:
            f = patch_features(vit, x, layers)
            h = heads["norm"](f)
            s = heads["static"](h).view(len(x), 8, 8, -1)
            sel = t["fg"] & (t["cover"] >= 0.5)
            hit += int((s[..., nc:].argmax(-1) == t["shape"])[sel].sum())
            mhit += int((heads["mlp"](f).view(len(x), 8, 8, -1).argmax(-1) == t["shape"])[sel].sum())
            tot += int(sel.sum())
            chit += int((s[..., :nc].argmax(-1) == t["colour"])[t["fg"]].sum())
            ctot += int(t["fg"].sum())
        vit.train()
        return dict(val_shape=hit / tot, val_mlp_shape=mhit / tot, val_colour=chit / ctot, patches=tot)

    pool = batch(np.random.default_rng(a.seed + 1), synth, a.fixed, cfg) if a.fixed else None
    t0 = time.process_time()
    hist = []
    for step in range(1, a.steps + 1):
        lr = a.lr * min(1.0, step / a.warmup) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        if a.fixed:
            idx = torch.from_numpy(rng.choice(a.fixed, a.batch, replace=False))
            x, t = pool[0][idx], {k: v[idx] for k, v in pool[1].items()}
        else:
            x, t = batch(rng, synth, a.batch, cfg)
        f = features(x)
        h = heads["norm"](f)
        B = len(x)
        s = heads["static"](h).view(B, 8, 8, -1)
        sel = t["fg"] & (t["cover"] >= a.train_cover)
        fg = t["fg"]
        parts = {}
        if w.get("shape"):
            parts["shape"] = F.cross_entropy(s[..., nc:][sel], t["shape"][sel])
        if w.get("colour"):
            parts["colour"] = F.cross_entropy(s[..., :nc].reshape(-1, nc), t["colour"].reshape(-1))
        if w.get("geometry"):
            parts["geometry"] = F.binary_cross_entropy_with_logits(heads["geometry"](h), t["geometry"].flatten(1, 2))
        if w.get("nbr"):
            lg = heads["nbr"](h).view(B, 8, 8, -1)
            parts["nbr"] = F.binary_cross_entropy_with_logits(lg[fg], t["nbr_mask"][fg])
        if w.get("centred"):
            lg = heads["centred"](h).view(B, 8, 8, -1)
            parts["centred"] = F.binary_cross_entropy_with_logits(lg[fg], t["centred_mask"][fg])
        if w.get("mlp"):
            parts["mlp"] = F.cross_entropy(heads["mlp"](f.detach()).view(B, 8, 8, -1)[sel], t["shape"][sel])
        loss = sum(w[k] * v for k, v in parts.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            with torch.no_grad():
                acc = (s[..., nc:].argmax(-1) == t["shape"])[sel].float().mean().item()
            print(f"step {step} cpu {time.process_time() - t0:.0f}s loss {loss.item():.3f} "
                  + " ".join(f"{k} {v.item():.3f}" for k, v in parts.items()) + f" train_shape {acc:.3f}",
                  flush=True)
        if step % a.eval_every == 0 or step == a.steps:
            r = evaluate()
            r.update(step=step, cpu_s=round(time.process_time() - t0, 1))
            hist.append(r)
            print("EVAL", json.dumps(r), flush=True)
    if a.out:
        with open(a.out, "a") as fh:
            fh.write(json.dumps(dict(args=vars(a), hist=hist)) + "\n")


if __name__ == "__main__":
    main()
