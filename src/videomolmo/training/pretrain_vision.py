"""Dense per-patch vision pretraining: our stand-in for CLIP's pretraining on the synthetic data.

Probe 1 of issue 5 showed that a from-scratch ViT trained only through the LLM's next-token loss
never learns to ground: the gradient reaching the vision tower is too weak and too late. So
the tiny ViT is first trained with dense targets on every patch token of the 8x8 grid:

- the colour and the shape of the sprite covering the patch (or background),
- the offset from the patch centre to that sprite's visible centroid (in patches), and that
  centroid's absolute position (fraction of the frame): the LLM then only has to find the
  patch that matches the query and read its position out, instead of also inferring where
  a token sits from its place in the sequence (probe 1's "same point for every clip"),
- the sprite's motion direction (left / right / up / down / still), predicted by a small
  convolutional head from the patch neighbourhood of the current frame's features and the
  mean of the 4 previous frames' features -- exactly what the model's temporal module gets --
  so the features carry what it needs to tell look-alikes apart.

The heads are thrown away; the ViT weights initialise the model's vision tower.

Shape (issue 11). With 8 clips x 8 frames per step the shape head stayed at chance for every
run we tried: a batch holds only ~60 sprites, and frames of one clip are near-copies. The
`tiny-shape` preset adds a second batch of many independent clips x 1 frame per step with
colour-free geometry targets: each patch token predicts its own 14x14 foreground mask, shape is
supervised only on patches mostly covered by one sprite, and a mask-pooled sprite feature
(patch features weighted by the sprite's coverage) is classified by shape.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.files import atomic_path, atomic_write_json
from videomolmo.synth import COLOURS, MOTIONS, SHAPES, Clip, SynthConfig, clip_rng, generate_clip
from videomolmo.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from videomolmo.training.log import JsonlLogger

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# The names `VisionPretrainConfig.from_name` knows (its error lists them; the CLI help keeps its
# own copy so that `videomolmo --help` does not import torch).
VISION_PRESETS = ("tiny", "tiny-shape", "tiny-shape2", "test", "test-shape", "test-shape2")


@dataclass
class VisionPretrainConfig:
    """Recipe of the dense pretraining stage; `vision` is a `transformers.CLIPVisionConfig` dict."""

    # Matches `ModelConfig.from_name("tiny").vision` (width 160, 4 blocks, quick_gelu).
    vision: dict = field(default_factory=lambda: dict(
        hidden_size=160, intermediate_size=640, num_hidden_layers=4, num_attention_heads=4,
        image_size=112, patch_size=14, num_channels=3, hidden_act="quick_gelu",
        layer_norm_eps=1e-5))
    feature_layers: tuple[int, ...] = (-1, -3)  # block outputs concatenated, as the model does
    steps: int = 1500
    clips_per_step: int = 8
    frames: int = 8
    context: int = 4  # previous frames the motion head sees (the model's l)
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    owner_min_fraction: float = 0.10  # of a patch's pixels, for a sprite to own the patch
    seed: int = 0
    checkpoint_every_s: float = 90.0
    log_every: int = 10
    init: str | None = None  # start the ViT from an earlier stage's vision.safetensors
    # Overwrite the learned position embeddings with 2-D sin-cos ones at the start: random
    # N(0, 0.02) ones are drowned by the content and the absolute-position target stalls at
    # the chance error (~33 px at 112 px) -- yet the LLM needs to read positions out.
    sincos_positions: bool = True
    absolute_target: bool = True  # the absolute-centroid head (False reproduces stage 1)
    # The big-batch regime (0 = off, the earlier stages): `static_clips` extra independent clips
    # of `static_frames` frames per step, trained on the static targets only.
    static_clips: int = 0
    static_frames: int = 1
    # Shape is supervised only on patches whose owner covers at least this fraction (None: on
    # every patch, background as class 0 -- the earlier stages).
    shape_min_cover: float | None = None
    geometry_weight: float = 0.0  # per-patch 14x14 foreground-mask BCE
    pooled_shape_weight: float = 0.0  # shape of the coverage-weighted mean feature of a sprite
    eval_every: int = 0  # held-out shape accuracy every N steps (0 = only at the end)
    eval_clips: int = 64
    # Shape geometry targets of the patch's owning sprite (`shape_targets`), on every owned
    # patch of the static batch: its mask over the 3x3-patch neighbourhood (`nbr`) and its mask
    # centred on the sprite (`centred`), BCE at half resolution. 0 = off.
    nbr_weight: float = 0.0
    centred_weight: float = 0.0
    # (min, max) sprites of the static batch's clips (None: the synthetic default, 2-8).
    static_sprites: tuple[int, int] | None = None

    @classmethod
    def from_name(cls, name: str) -> "VisionPretrainConfig":
        """`tiny` (the bundled model's ViT), `tiny-shape` (the big-batch shape regime, meant
        to start from an earlier ViT with `--init`), `tiny-shape2` (tiny-shape plus the
        neighbourhood / centred mask targets on dense static clips), `test` and `test-shape`,
        `test-shape2` (seconds, for tests)."""
        if name == "tiny":
            return cls()
        if name == "tiny-shape":
            return cls(steps=1200, clips_per_step=2, frames=8, static_clips=128, static_frames=1,
                       shape_min_cover=0.5, geometry_weight=1.0, pooled_shape_weight=1.0,
                       sincos_positions=False, warmup=100, checkpoint_every_s=120.0,
                       eval_every=100, log_every=5)
        if name == "tiny-shape2":
            # tiny-shape plus the owner's neighbourhood and centred masks as dense targets on
            # every owned patch, and static clips of 6-8 sprites (half as many, twice as dense).
            return replace(cls.from_name("tiny-shape"), steps=3000, static_clips=64,
                           static_sprites=(6, 8), nbr_weight=1.0, centred_weight=1.0,
                           eval_clips=200)
        if name == "test":
            return cls(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, image_size=112, patch_size=14,
                                   num_channels=3, hidden_act="quick_gelu"),
                       feature_layers=(-1, -2), steps=3, clips_per_step=2, frames=6)
        if name == "test-shape":
            return replace(cls.from_name("test"), static_clips=4, shape_min_cover=0.5,
                           geometry_weight=1.0, pooled_shape_weight=1.0, eval_clips=4)
        if name == "test-shape2":
            return replace(cls.from_name("test-shape"), static_sprites=(6, 8), nbr_weight=1.0,
                           centred_weight=1.0)
        raise ConfigError(f"pretrain-vision: unknown preset {name!r}; choose one of {', '.join(VISION_PRESETS)}")


def normalize_frames(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, CLIP-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


MAX_SPRITES = 8  # SynthConfig's bound; per-sprite targets are padded to it


def patch_ownership(masks: np.ndarray, patch: int, min_fraction: float):
    """(counts (K, T, g, g) pixels of each sprite per patch, owner (T, g, g) the sprite covering
    most of it, own (T, g, g) whether that sprite covers at least `min_fraction` of it) for
    sprite masks (K, T, H, W), K >= 1: the one ownership rule of every per-patch target."""
    K, T, H, _ = masks.shape
    g = H // patch
    counts = masks[:, :, : g * patch, : g * patch].reshape(K, T, g, patch, g, patch).sum((3, 5))
    return counts, counts.argmax(0), counts.max(0) >= min_fraction * patch * patch


def dense_targets(clip: Clip, patch: int, min_fraction: float) -> dict[str, np.ndarray]:
    """Per-frame, per-patch targets: colour / shape class (0 = background), centroid offset in
    patches, motion class (-1 = background), the owner's coverage fraction (`cover`), the
    patch's own foreground mask (`geometry`, (T, g, g, patch*patch), any sprite, no colour),
    and per sprite its coverage of every patch (`sprite_cover`, (8, T, g, g)) and shape index
    (`sprite_shape`, -1 = padding)."""
    K, T, H, W = clip.masks.shape
    g = H // patch
    fgpix = clip.masks.any(0) if K else np.zeros((T, H, W), bool)
    geometry = (fgpix[:, : g * patch, : g * patch].reshape(T, g, patch, g, patch)
                .transpose(0, 1, 3, 2, 4).reshape(T, g, g, patch * patch).astype(np.float32))
    cover = np.zeros((T, g, g), np.float32)
    sprite_cover = np.zeros((MAX_SPRITES, T, g, g), np.float32)
    sprite_shape = np.full((MAX_SPRITES,), -1, np.int64)
    colour_ids = {c: i + 1 for i, c in enumerate(COLOURS)}
    shape_ids = {s: i + 1 for i, s in enumerate(SHAPES)}
    colour = np.zeros((T, g, g), np.int64)
    shape = np.zeros((T, g, g), np.int64)
    motion = np.full((T, g, g), -1, np.int64)
    offset = np.zeros((T, g, g, 2), np.float32)
    absolute = np.zeros((T, g, g, 2), np.float32)
    fg = np.zeros((T, g, g), bool)
    extra = dict(cover=cover, geometry=geometry, sprite_cover=sprite_cover, sprite_shape=sprite_shape)
    if K == 0:
        return dict(colour=colour, shape=shape, motion=motion, offset=offset, absolute=absolute, fg=fg,
                    **extra)
    counts, owner, own = patch_ownership(clip.masks, patch, min_fraction)
    cover[:] = counts.max(0) / float(patch * patch)
    sprite_cover[:K] = counts / float(patch * patch)
    sprite_shape[:K] = [SHAPES.index(sp.shape) for sp in clip.sprites]
    centres = (np.arange(g) + 0.5) * patch
    for t in range(T):
        for k, sp in enumerate(clip.sprites):
            sel = own[t] & (owner[t] == k)
            if not sel.any():
                continue
            p = clip.points[k][t]
            ys, xs = np.nonzero(sel)
            colour[t, ys, xs] = colour_ids[sp.colour]
            shape[t, ys, xs] = shape_ids[sp.shape]
            motion[t, ys, xs] = MOTIONS.index(sp.motion)
            offset[t, ys, xs, 0] = (p[0] - centres[xs]) / patch
            offset[t, ys, xs, 1] = (p[1] - centres[ys]) / patch
            absolute[t, ys, xs] = (p[0] / W, p[1] / H)
            fg[t, ys, xs] = True
    return dict(colour=colour, shape=shape, motion=motion, offset=offset, absolute=absolute, fg=fg,
                **extra)


NBR_SIDE = 21  # the 3x3-patch (42x42 px) neighbourhood at half resolution
CENTRED_SIDE = 16  # a 32x32 px window centred on the sprite, at half resolution


def shape_targets(clip: Clip, patch: int, min_fraction: float = 0.10) -> dict[str, np.ndarray]:
    """Per-frame, per-patch shape-geometry targets of the patch's owning sprite (zeros where no
    sprite owns the patch), as in `dense_targets`, at half resolution (2x2 pixel means):

    - `nbr_mask` (T, g, g, 21*21): the owner's visible mask over the 3x3-patch neighbourhood
      (42x42 px, the patch in the middle; zero outside the frame),
    - `centred_mask` (T, g, g, 16*16): the owner's visible mask in a 32x32 px window centred
      on the sprite's centre -- the same for every patch of the sprite, independent of where
      the sprite sits relative to the patch grid."""
    K, T, H, W = clip.masks.shape
    g = H // patch
    nbr = np.zeros((T, g, g, NBR_SIDE * NBR_SIDE), np.float32)
    centred = np.zeros((T, g, g, CENTRED_SIDE * CENTRED_SIDE), np.float32)
    if K == 0:
        return dict(nbr_mask=nbr, centred_mask=centred)
    m = clip.masks[:, :, : g * patch, : g * patch]
    _, owner, own = patch_ownership(clip.masks, patch, min_fraction)
    half = patch // 2
    m2 = m.reshape(K, T, g * half, 2, g * half, 2).mean((3, 5), dtype=np.float32)
    pad = np.pad(m2, ((0, 0), (0, 0), (half, half), (half, half)))
    views = np.lib.stride_tricks.sliding_window_view(pad, (3 * half, 3 * half), axis=(2, 3))[:, :, ::half, ::half]
    tt, ys, xs = np.nonzero(own)
    kk = owner[tt, ys, xs]
    nbr[tt, ys, xs] = views[kk, tt, ys, xs].reshape(len(tt), NBR_SIDE * NBR_SIDE)
    win = 2 * CENTRED_SIDE
    big = np.pad(clip.masks, ((0, 0), (0, 0), (win, win), (win, win)))
    for t, k in sorted(set(zip(tt.tolist(), kk.tolist()))):
        cx, cy = clip.sprites[k].centre(t)
        x0, y0 = int(round(cx)) - win // 2 + win, int(round(cy)) - win // 2 + win
        crop = big[k, t, y0:y0 + win, x0:x0 + win]
        if crop.shape != (win, win):  # the sprite's centre is far outside the frame
            continue
        sel = (tt == t) & (kk == k)
        centred[t, ys[sel], xs[sel]] = crop.reshape(CENTRED_SIDE, 2, CENTRED_SIDE, 2).mean((1, 3)).reshape(-1)
    return dict(nbr_mask=nbr, centred_mask=centred)


class DenseHeads(nn.Module):
    """Static per-patch heads plus a motion head over (context + 1) frames."""

    def __init__(self, dim: int, context: int, absolute: bool = True, geometry: int = 0,
                 pooled_shape: bool = False, nbr: int = 0, centred: int = 0):
        super().__init__()
        self.context = context
        self.norm = nn.LayerNorm(dim)
        self.static = nn.Linear(dim, len(COLOURS) + 1 + len(SHAPES) + 1 + (4 if absolute else 2))
        self.motion = nn.Sequential(
            nn.Conv2d(dim * 2, 128, kernel_size=5, padding=2), nn.GELU(),
            nn.Conv2d(128, len(MOTIONS), kernel_size=1))
        # Only created when used, so that checkpoints of the earlier stages still load.
        self.geometry = nn.Linear(dim, geometry) if geometry else None
        self.pooled = nn.Linear(dim, len(SHAPES)) if pooled_shape else None
        self.nbr = nn.Linear(dim, nbr) if nbr else None
        self.centred = nn.Linear(dim, centred) if centred else None

    def static_logits(self, feats: torch.Tensor, grid: int) -> torch.Tensor:
        """feats (B, T, g*g, D) -> (B, T, g, g, C) logits of the per-patch linear head."""
        B, T = feats.shape[:2]
        return self.static(self.norm(feats)).view(B, T, grid, grid, -1)

    def forward(self, feats: torch.Tensor, grid: int):
        """feats (B, T, g*g, D) -> motion logits (B, T - context, g, g, 5) for every window
        ending at t >= context."""
        B, T, N, D = feats.shape
        h = self.norm(feats)
        maps = h.view(B, T, grid, grid, D).permute(0, 1, 4, 2, 3)  # B,T,D,g,g
        # The model's temporal module sees the current frame and the MEAN of the l previous
        # frames' features (upstream VideoMolmo), so the motion head gets exactly that.
        windows = [torch.cat([maps[:, t], maps[:, t - self.context: t].mean(1)], dim=1)
                   for t in range(self.context, T)]
        w = torch.stack(windows, 1)  # B, T', (c+1)D, g, g
        m = self.motion(w.flatten(0, 1)).view(B, len(windows), len(MOTIONS), grid, grid)
        return m.permute(0, 1, 3, 4, 2)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) 2-D sin-cos position embeddings, row-major: x in the first half of the
    channels, y in the second (MAE-style), amplitude 1."""
    q = dim // 4
    omega = 1.0 / (10.0 ** (torch.arange(q, dtype=torch.float32) / max(1, q - 1) * 2))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32),
                            torch.arange(grid, dtype=torch.float32), indexing="ij")
    def enc(v):
        a = v.reshape(-1, 1) * omega.reshape(1, -1) * 3.0
        return torch.cat([a.sin(), a.cos()], dim=1)
    out = torch.zeros(grid * grid, dim)
    e = torch.cat([enc(xs), enc(ys)], dim=1)
    out[:, : e.shape[1]] = e
    return out


def build_vision(vision: dict):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(CLIPVisionConfig(**vision))


def patch_features(vit, pixels: torch.Tensor, layers: tuple[int, ...] = (-1,)) -> torch.Tensor:
    """All patch tokens (no CLS) of the chosen block outputs, concatenated: (N, g*g, D*len)."""
    hs = vit(pixel_values=pixels, output_hidden_states=True).hidden_states
    return torch.cat([hs[i][:, 1:] for i in layers], dim=-1)


def _batch(rng: np.random.Generator, cfg: VisionPretrainConfig, synth: SynthConfig, n: int | None = None):
    clips = [generate_clip(rng, synth) for _ in range(cfg.clips_per_step if n is None else n)]
    tg = [dense_targets(c, cfg.vision["patch_size"], cfg.owner_min_fraction) for c in clips]
    if n is not None and (cfg.nbr_weight > 0 or cfg.centred_weight > 0):  # the static batch only
        for t, c in zip(tg, clips):
            t.update(shape_targets(c, cfg.vision["patch_size"], cfg.owner_min_fraction))
    frames = np.stack([c.frames for c in clips])  # B,T,H,W,3
    out = {k: torch.from_numpy(np.stack([t[k] for t in tg])) for k in tg[0]}
    return frames, out


def _static_losses(heads: DenseHeads, feats: torch.Tensor, tgt: dict, grid: int,
                   cfg: VisionPretrainConfig) -> tuple[torch.Tensor, dict, dict]:
    """Losses of the per-patch targets (no motion): (total, loss parts, accuracies)."""
    static = heads.static_logits(feats, grid)
    nc, ns = len(COLOURS) + 1, len(SHAPES) + 1
    zero = static.sum() * 0
    lc = F.cross_entropy(static[..., :nc].reshape(-1, nc), tgt["colour"].reshape(-1))
    fg = tgt["fg"]
    shape_logits = static[..., nc:nc + ns]
    if cfg.shape_min_cover is None:
        ls = F.cross_entropy(shape_logits.reshape(-1, ns), tgt["shape"].reshape(-1))
        shape_sel = fg
    else:
        # A patch only partly covered shows an edge or a corner of its sprite, which several
        # shapes share: supervising those taught the earlier stages to guess.
        shape_sel = fg & (tgt["cover"] >= cfg.shape_min_cover)
        ls = F.cross_entropy(shape_logits[shape_sel], tgt["shape"][shape_sel]) if shape_sel.any() else zero
    off = static[..., nc + ns:nc + ns + 2]
    ab = static[..., nc + ns + 2:]
    lo = F.smooth_l1_loss(off[fg], tgt["offset"][fg], beta=0.25) if fg.any() else zero
    # Absolute position in units of patches (x grid) so its scale matches the offset's.
    if ab.shape[-1] == 0 or not fg.any():
        la = zero
    else:
        la = F.smooth_l1_loss(ab[fg] * grid, tgt["absolute"][fg] * grid, beta=0.25)
    total = lc + ls + 2.0 * lo + 2.0 * la
    parts = {"loss_colour": lc.item(), "loss_shape": ls.item(), "loss_offset": lo.item(),
             "loss_absolute": la.item()}
    acc: dict[str, float] = {}
    h = (heads.norm(feats) if any(m is not None for m in (heads.geometry, heads.pooled, heads.nbr, heads.centred))
         else None)
    for name, head, weight in (("nbr", heads.nbr, cfg.nbr_weight), ("centred", heads.centred, cfg.centred_weight)):
        if head is not None and weight > 0 and f"{name}_mask" in tgt:
            if fg.any():
                lm = F.binary_cross_entropy_with_logits(head(h).view(*fg.shape, -1)[fg], tgt[f"{name}_mask"][fg])
            else:
                lm = zero
            total = total + weight * lm
            parts[f"loss_{name}"] = lm.item()
    if heads.geometry is not None and cfg.geometry_weight > 0:
        lg = F.binary_cross_entropy_with_logits(heads.geometry(h), tgt["geometry"].flatten(2, 3))
        total = total + cfg.geometry_weight * lg
        parts["loss_geometry"] = lg.item()
    if heads.pooled is not None and cfg.pooled_shape_weight > 0:
        logits, labels = _pooled_shape_logits(heads, h, tgt)
        if labels.numel():
            lp = F.cross_entropy(logits, labels)
            total = total + cfg.pooled_shape_weight * lp
            parts["loss_pooled_shape"] = lp.item()
            acc["pooled_shape_acc"] = (logits.argmax(-1) == labels).float().mean().item()
    with torch.no_grad():
        acc.update({
            "colour_acc_fg": (static[..., :nc].argmax(-1) == tgt["colour"])[fg].float().mean().item(),
            "shape_acc_fg": (shape_logits.argmax(-1) == tgt["shape"])[shape_sel].float().mean().item(),
            "offset_err_px": ((off[fg] - tgt["offset"][fg]).norm(dim=-1).mean().item() * 14) if fg.any() else float("nan"),
            "absolute_err_px": ((ab[fg] - tgt["absolute"][fg]).norm(dim=-1).mean().item() * grid * 14)
            if fg.any() and ab.shape[-1] else float("nan"),
        })
    return total, parts, acc


def _pooled_shape_logits(heads: DenseHeads, h: torch.Tensor, tgt: dict, min_patches: float = 0.5):
    """Shape logits of every visible sprite's coverage-weighted mean patch feature.
    h (B, T, g*g, D); returns (logits (S, 5), labels (S,))."""
    B, T, N, D = h.shape
    w = tgt["sprite_cover"].permute(0, 2, 1, 3, 4).reshape(B, T, -1, N)  # B, T, K, N
    mass = w.sum(-1)  # B, T, K
    pooled = torch.einsum("btkn,btnd->btkd", w, h) / mass.clamp_min(1e-6)[..., None]
    labels = tgt["sprite_shape"][:, None, :].expand(B, T, -1)
    keep = (mass >= min_patches) & (labels >= 0)
    return heads.pooled(pooled[keep]), labels[keep]


def _losses(heads: DenseHeads, feats: torch.Tensor, tgt: dict, grid: int, context: int,
            cfg: VisionPretrainConfig | None = None):
    cfg = cfg or VisionPretrainConfig()
    static_loss, parts, acc = _static_losses(heads, feats, tgt, grid, cfg)
    motion = heads(feats, grid)
    mt = tgt["motion"][:, context:]
    mfg = mt >= 0
    lm = (F.cross_entropy(motion[mfg], mt[mfg]) if mfg.any() else motion.sum() * 0)
    with torch.no_grad():
        acc["motion_acc_fg"] = (motion.argmax(-1) == mt)[mfg].float().mean().item() if mfg.any() else float("nan")
    return static_loss + lm, {**parts, "loss_motion": lm.item(), **acc}


@torch.no_grad()
def evaluate_shape(vit, heads: DenseHeads, cfg: VisionPretrainConfig, clips: int, split: str = "val",
                   seed: int = 0, min_cover: float = 0.5, batch: int = 32) -> dict[str, float]:
    """Per-patch shape accuracy on held-out clips (one frame each, `synth.clip_rng(seed, split, i)`):
    over patches whose owning sprite covers >= `min_cover` of them; plus colour accuracy on
    sprite patches and, when the heads have one, the mask-pooled sprite shape accuracy."""
    synth = SynthConfig(frames=1, size=cfg.vision["image_size"], kind_weights=(1, 0, 0, 0, 0))
    grid = cfg.vision["image_size"] // cfg.vision["patch_size"]
    nc, ns = len(COLOURS) + 1, len(SHAPES) + 1
    hit = tot = chit = ctot = phit = ptot = 0
    was = vit.training
    vit.eval()
    try:
        for start in range(0, clips, batch):
            cl = [generate_clip(clip_rng(seed, split, i), synth) for i in range(start, min(clips, start + batch))]
            tg = [dense_targets(c, cfg.vision["patch_size"], cfg.owner_min_fraction) for c in cl]
            tgt = {k: torch.from_numpy(np.stack([t[k] for t in tg])) for k in tg[0]}
            frames = np.stack([c.frames[0] for c in cl])
            feats = patch_features(vit, normalize_frames(frames), tuple(cfg.feature_layers))
            feats = feats.view(len(cl), 1, grid * grid, -1)
            static = heads.static_logits(feats, grid)
            sel = tgt["fg"] & (tgt["cover"] >= min_cover)
            pred = static[..., nc:nc + ns].argmax(-1)
            hit += int((pred == tgt["shape"])[sel].sum())
            tot += int(sel.sum())
            cpred = static[..., :nc].argmax(-1)
            chit += int((cpred == tgt["colour"])[tgt["fg"]].sum())
            ctot += int(tgt["fg"].sum())
            if heads.pooled is not None:
                logits, labels = _pooled_shape_logits(heads, heads.norm(feats), tgt)
                phit += int((logits.argmax(-1) == labels).sum())
                ptot += int(labels.numel())
    finally:
        vit.train(was)
    out = {"shape_acc_covered": hit / max(1, tot), "covered_patches": tot,
           "colour_acc_fg": chit / max(1, ctot)}
    if ptot:
        out["pooled_shape_acc"] = phit / ptot
    return out


def _heads(cfg: VisionPretrainConfig) -> DenseHeads:
    return DenseHeads(cfg.vision["hidden_size"] * len(cfg.feature_layers), cfg.context,
                      absolute=cfg.absolute_target,
                      geometry=cfg.vision["patch_size"] ** 2 if cfg.geometry_weight > 0 else 0,
                      pooled_shape=cfg.pooled_shape_weight > 0,
                      nbr=NBR_SIDE ** 2 if cfg.nbr_weight > 0 else 0,
                      centred=CENTRED_SIDE ** 2 if cfg.centred_weight > 0 else 0)


def run_pretraining(cfg: VisionPretrainConfig, out: str | Path, resume: bool = True,
                    progress: bool = True, stop_at: int | None = None) -> Path:
    """Train (or resume) the dense pretraining stage; writes `<out>/vision.safetensors` and
    `<out>/vision_config.json` (the CLIPVisionConfig kwargs) at the end. Returns that file.

    `stop_at` ends the run after that step while keeping the LR schedule of `cfg.steps`
    (how a run that was stopped early is reproduced)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vit = build_vision(cfg.vision)
    if cfg.init:
        missing, unexpected = vit.load_state_dict(_load_vit_state(cfg.init), strict=False)
        if [m for m in missing if "post_layernorm" not in m] or unexpected:
            raise CheckpointError(f"{cfg.init}: does not match the ViT (missing {missing[:3]}, "
                                  f"unexpected {unexpected[:3]})")
    if cfg.sincos_positions:
        grid_side = cfg.vision["image_size"] // cfg.vision["patch_size"]
        with torch.no_grad():
            pe = vit.embeddings.position_embedding.weight
            pe.zero_()
            pe[1:] = sincos_2d(grid_side, pe.shape[1])
    heads = _heads(cfg)
    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-6,
                            weight_decay=cfg.weight_decay)
    step, cpu_before = 0, 0.0
    ck = latest_checkpoint(out) if resume else None
    if ck is not None:
        step, state, extra = load_checkpoint(ck, optimizer=opt, np_rng=rng)
        cpu_before = float(extra.get("cpu_s", 0.0))
        vit.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vit.")})
        heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
    (out / "pretrain_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    synth = SynthConfig(frames=cfg.frames, size=cfg.vision["image_size"],
                        kind_weights=(1, 0, 0, 0, 0))
    lo, hi = cfg.static_sprites or (SynthConfig.min_sprites, SynthConfig.max_sprites)
    static_synth = SynthConfig(frames=cfg.static_frames, size=cfg.vision["image_size"],
                               kind_weights=(1, 0, 0, 0, 0), min_sprites=int(lo), max_sprites=int(hi))
    grid = cfg.vision["image_size"] // cfg.vision["patch_size"]
    log = JsonlLogger(out / "pretrain_log.jsonl", resume_step=step)

    def state() -> dict:
        s = {f"vit.{k}": v for k, v in vit.state_dict().items()}
        s.update({f"heads.{k}": v for k, v in heads.state_dict().items()})
        return s

    last_ck = time.monotonic()
    t0 = time.process_time()
    vit.train()
    end = min(cfg.steps, stop_at) if stop_at else cfg.steps
    while step < end:
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (
            1 + math.cos(math.pi * min(1.0, step / max(1, cfg.steps))))
        for gr in opt.param_groups:
            gr["lr"] = lr
        frames, tgt = _batch(rng, cfg, synth)
        B, T = frames.shape[:2]
        feats = patch_features(vit, normalize_frames(frames.reshape(B * T, *frames.shape[2:])),
                               tuple(cfg.feature_layers))
        loss, parts = _losses(heads, feats.view(B, T, grid * grid, -1), tgt, grid, cfg.context, cfg)
        if cfg.static_clips:
            sframes, stgt = _batch(rng, cfg, static_synth, cfg.static_clips)
            sB, sT = sframes.shape[:2]
            sfeats = patch_features(vit, normalize_frames(sframes.reshape(sB * sT, *sframes.shape[2:])),
                                    tuple(cfg.feature_layers))
            sloss, sparts, sacc = _static_losses(heads, sfeats.view(sB, sT, grid * grid, -1), stgt, grid, cfg)
            loss = loss + sloss
            parts.update({f"big_{k}": v for k, v in {**sparts, **sacc}.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == end:
            log.write({"step": step, "loss": loss.item(), "lr": lr,
                       "cpu_s": cpu_before + time.process_time() - t0, **parts})
            if progress:
                print(f"[pretrain-vision] step {step}/{cfg.steps} loss {loss.item():.3f} "
                      + " ".join(f"{k} {v:.3f}" for k, v in parts.items()), flush=True)
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == end:
            # Held-out clips from the val stream, never drawn by the training stream.
            res = evaluate_shape(vit, heads, cfg, cfg.eval_clips, split="val", seed=cfg.seed)
            log.write({"step": step, "heldout": res})
            if progress:
                print(f"[pretrain-vision] step {step} held-out " + " ".join(
                    f"{k} {v:.3f}" for k, v in res.items()), flush=True)
        if time.monotonic() - last_ck > cfg.checkpoint_every_s or step == end:
            save_checkpoint(out, step, state(), optimizer=opt, np_rng=rng,
                            extra={"cpu_s": cpu_before + time.process_time() - t0})
            last_ck = time.monotonic()
    final = out / "vision.safetensors"
    with atomic_path(final) as tmp:
        save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp))
    atomic_write_json(out / "vision_config.json", cfg.vision, indent=1)
    return final


def evaluate_run(out: str | Path, clips: int = 500, split: str = "test") -> dict[str, float]:
    """Held-out shape accuracy of a run's latest checkpoint (ViT + heads) on `clips` clips of
    `split` (the test stream: never drawn by training, nor by the in-run `val` checks)."""
    out = Path(out)
    ck = latest_checkpoint(out)
    if ck is None or not (out / "pretrain_config.json").is_file():
        raise CheckpointError(f"{out}: no pretraining checkpoint to evaluate")
    raw = json.loads((out / "pretrain_config.json").read_text())
    raw["feature_layers"] = tuple(raw["feature_layers"])
    if raw.get("static_sprites") is not None:
        raw["static_sprites"] = tuple(raw["static_sprites"])
    cfg = VisionPretrainConfig(**raw)
    step, state, _ = load_checkpoint(ck, restore_rng=False)
    vit = build_vision(cfg.vision)
    vit.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("vit.")})
    heads = _heads(cfg)
    heads.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("heads.")})
    return {"step": step, **evaluate_shape(vit, heads, cfg, clips, split=split, seed=cfg.seed)}


def _load_vit_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A `vision.safetensors`, or a whole model file (the bundled one): its ViT weights."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: vision weights not found")
    state = load_file(str(path))
    prefix = "vision.clip."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def export_vision(out: str | Path) -> Path:
    """Write `<out>/vision.safetensors` + `vision_config.json` from the run's latest checkpoint
    (to use a run that was stopped early)."""
    from safetensors.torch import save_file

    out = Path(out)
    ck = latest_checkpoint(out)
    if ck is None:
        raise CheckpointError(f"{out}: no pretraining checkpoint to export")
    cfg = json.loads((out / "pretrain_config.json").read_text())
    _, state, _ = load_checkpoint(ck, restore_rng=False)
    vit = {k[4:]: v.contiguous() for k, v in state.items() if k.startswith("vit.")}
    with atomic_path(out / "vision.safetensors") as tmp:
        save_file(vit, str(tmp))
    atomic_write_json(out / "vision_config.json", cfg["vision"], indent=1)
    return out / "vision.safetensors"


def main() -> None:  # pragma: no cover - `python -m videomolmo.training.pretrain_vision`
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--no-resume", action="store_true")
    a = ap.parse_args()
    cfg = VisionPretrainConfig.from_name(a.preset)
    if a.steps:
        cfg.steps = a.steps
    run_pretraining(cfg, a.out, resume=not a.no_resume)


if __name__ == "__main__":  # pragma: no cover
    main()
