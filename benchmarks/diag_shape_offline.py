"""Issue 11, item 2: what per-patch shape readouts can reach, without training a ViT.

    PYTHONPATH=src python benchmarks/diag_shape_offline.py targets   # ground-truth inputs
    PYTHONPATH=src python benchmarks/diag_shape_offline.py run RUN   # a pretrain-vision run

`targets`: linear and MLP shape classifiers (5 classes, covered patches: >= 50 % of the patch
owned by one sprite) fed ground-truth masks of 3,000 train clips, measured on 500 val clips:
the patch's own 14x14 foreground mask, its owner's mask over the 3x3-patch neighbourhood
(half resolution), the owner's sprite-centred mask; plus the MLP's learning curve (val accuracy
against labelled patches seen, 220 a step, about what a 64-clip ViT step supervises).
`run`: the same classifiers on the run's latest checkpoint: its (normalised) token features,
its geometry head's decoded own-patch masks, and the ground-truth masks of the same patches.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.synth import SynthConfig, clip_rng, generate_clip
from videomolmo.training.checkpoint import latest_checkpoint, load_checkpoint
from videomolmo.training.pretrain_vision import (
    VisionPretrainConfig, _heads, build_vision, dense_targets, normalize_frames, patch_features,
    shape_targets)

SYNTH = SynthConfig(frames=1, kind_weights=(1, 0, 0, 0, 0))


def fit(xtr, ytr, xva, yva, hidden: int, epochs: int = 30, batch: int = 256, curve: bool = False):
    torch.manual_seed(0)
    d = xtr.shape[1]
    m = nn.Linear(d, 5) if hidden == 0 else nn.Sequential(
        nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 5))
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    seen, points = 0, []
    for _ in range(epochs):
        perm = torch.randperm(len(ytr))
        for b in range(0, len(ytr), batch):
            idx = perm[b:b + batch]
            loss = F.cross_entropy(m(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            if curve and (b // batch) % 24 == 0:
                with torch.no_grad():
                    points.append((seen, round((m(xva).argmax(-1) == yva).float().mean().item(), 3)))
    with torch.no_grad():
        acc = lambda x, y: round((m(x).argmax(-1) == y).float().mean().item(), 3)  # noqa: E731
        return acc(xtr, ytr), acc(xva, yva), points


def targets_data(split: str, n: int):
    own, nbr, cen, y = [], [], [], []
    for i in range(n):
        c = generate_clip(clip_rng(0, split, i), SYNTH)
        d, e = dense_targets(c, 14, 0.1), shape_targets(c, 14)
        ys, xs = np.nonzero(d["fg"][0] & (d["cover"][0] >= 0.5))
        own.append(d["geometry"][0, ys, xs])
        nbr.append(e["nbr_mask"][0, ys, xs])
        cen.append(e["centred_mask"][0, ys, xs])
        y.append(d["shape"][0, ys, xs] - 1)
    return [torch.from_numpy(np.concatenate(v)) for v in (own, nbr, cen, y)]


@torch.no_grad()
def run_data(vit, heads, cfg, split: str, n: int):
    feats, dec, gt, y = [], [], [], []
    for b in range(0, n, 50):
        cl = [generate_clip(clip_rng(0, split, i), SYNTH) for i in range(b, b + 50)]
        tg = [dense_targets(c, 14, 0.1) for c in cl]
        h = heads.norm(patch_features(vit, normalize_frames(np.stack([c.frames[0] for c in cl])),
                                      tuple(cfg.feature_layers)))
        p = torch.sigmoid(heads.geometry(h))
        for i, t in enumerate(tg):
            sel = torch.from_numpy((t["fg"][0] & (t["cover"][0] >= 0.5)).reshape(-1))
            feats.append(h[i][sel])
            dec.append(p[i][sel])
            gt.append(torch.from_numpy(t["geometry"][0].reshape(64, -1))[sel])
            y.append(torch.from_numpy(t["shape"][0].reshape(-1))[sel] - 1)
    return [torch.cat(v) for v in (feats, dec, gt, y)]


def main() -> None:
    torch.set_num_threads(1)
    if sys.argv[1] == "targets":
        tr, va = targets_data("train", 3000), targets_data("val", 500)
        prior = np.bincount(tr[3].numpy(), minlength=5) / len(tr[3])
        print("covered patches", len(tr[3]), len(va[3]), "class prior", prior.round(3).tolist())
        for j, name in enumerate(("own_mask", "nbr_mask", "centred_mask")):
            for hidden in (0, 256):
                a, b, _ = fit(tr[j], tr[3], va[j], va[3], hidden)
                print(name, "mlp" if hidden else "linear", "train", a, "val", b, flush=True)
        for j, name in ((0, "own_mask"), (1, "nbr_mask")):
            print(name, "mlp curve", fit(tr[j], tr[3], va[j], va[3], 256, epochs=8, batch=220, curve=True)[2])
        return
    run = sys.argv[2]
    raw = json.load(open(f"{run}/pretrain_config.json"))
    raw["feature_layers"] = tuple(raw["feature_layers"])
    if raw.get("static_sprites") is not None:
        raw["static_sprites"] = tuple(raw["static_sprites"])
    cfg = VisionPretrainConfig(**raw)
    step, st, _ = load_checkpoint(latest_checkpoint(run), restore_rng=False)
    vit = build_vision(cfg.vision)
    vit.load_state_dict({k[4:]: v for k, v in st.items() if k.startswith("vit.")})
    vit.eval()
    heads = _heads(cfg)
    heads.load_state_dict({k[6:]: v for k, v in st.items() if k.startswith("heads.")})
    tr, va = run_data(vit, heads, cfg, "train", 3000), run_data(vit, heads, cfg, "val", 500)
    bce = F.binary_cross_entropy(va[1].clamp(1e-6, 1 - 1e-6), va[2]).item()
    print(f"step {step}: decoded own-mask BCE on covered val patches {bce:.3f}")
    for j, name in enumerate(("features", "decoded_mask", "gt_mask")):
        for hidden in (0, 256):
            a, b, _ = fit(tr[j], tr[3], va[j], va[3], hidden)
            print(name, "mlp" if hidden else "linear", "train", a, "val", b, flush=True)


if __name__ == "__main__":
    main()
