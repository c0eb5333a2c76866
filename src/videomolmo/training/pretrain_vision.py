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
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.files import atomic_path, atomic_write_json
from videomolmo.synth import COLOURS, MOTIONS, SHAPES, Clip, SynthConfig, generate_clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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

    @classmethod
    def from_name(cls, name: str) -> "VisionPretrainConfig":
        """`tiny` (the bundled model's ViT) or `test` (seconds, for tests)."""
        if name == "tiny":
            return cls()
        if name == "test":
            return cls(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, image_size=112, patch_size=14,
                                   num_channels=3, hidden_act="quick_gelu"),
                       feature_layers=(-1, -2), steps=3, clips_per_step=2, frames=6)
        from videomolmo.errors import ConfigError
        raise ConfigError(f"pretrain-vision: unknown preset {name!r}; choose tiny or test")


def normalize_frames(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, CLIP-normalised."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def dense_targets(clip: Clip, patch: int, min_fraction: float) -> dict[str, np.ndarray]:
    """Per-frame, per-patch targets: colour / shape class (0 = background), centroid offset in
    patches, motion class (-1 = background)."""
    K, T, H, W = clip.masks.shape
    g = H // patch
    colour_ids = {c: i + 1 for i, c in enumerate(COLOURS)}
    shape_ids = {s: i + 1 for i, s in enumerate(SHAPES)}
    colour = np.zeros((T, g, g), np.int64)
    shape = np.zeros((T, g, g), np.int64)
    motion = np.full((T, g, g), -1, np.int64)
    offset = np.zeros((T, g, g, 2), np.float32)
    absolute = np.zeros((T, g, g, 2), np.float32)
    fg = np.zeros((T, g, g), bool)
    if K == 0:
        return dict(colour=colour, shape=shape, motion=motion, offset=offset, absolute=absolute, fg=fg)
    counts = clip.masks[:, :, : g * patch, : g * patch].reshape(K, T, g, patch, g, patch).sum((3, 5))
    owner = counts.argmax(0)  # (T, g, g)
    own = counts.max(0) >= min_fraction * patch * patch
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
    return dict(colour=colour, shape=shape, motion=motion, offset=offset, absolute=absolute, fg=fg)


class DenseHeads(nn.Module):
    """Static per-patch heads plus a motion head over (context + 1) frames."""

    def __init__(self, dim: int, context: int, absolute: bool = True):
        super().__init__()
        self.context = context
        self.norm = nn.LayerNorm(dim)
        self.static = nn.Linear(dim, len(COLOURS) + 1 + len(SHAPES) + 1 + (4 if absolute else 2))
        self.motion = nn.Sequential(
            nn.Conv2d(dim * 2, 128, kernel_size=5, padding=2), nn.GELU(),
            nn.Conv2d(128, len(MOTIONS), kernel_size=1))

    def forward(self, feats: torch.Tensor, grid: int):
        """feats (B, T, g*g, D) -> static logits (B, T, g, g, C) and motion logits
        (B, T - context, g, g, 5) for every window ending at t >= context."""
        B, T, N, D = feats.shape
        h = self.norm(feats)
        static = self.static(h).view(B, T, grid, grid, -1)
        maps = h.view(B, T, grid, grid, D).permute(0, 1, 4, 2, 3)  # B,T,D,g,g
        # The model's temporal module sees the current frame and the MEAN of the l previous
        # frames' features (upstream VideoMolmo), so the motion head gets exactly that.
        windows = [torch.cat([maps[:, t], maps[:, t - self.context: t].mean(1)], dim=1)
                   for t in range(self.context, T)]
        w = torch.stack(windows, 1)  # B, T', (c+1)D, g, g
        m = self.motion(w.flatten(0, 1)).view(B, len(windows), len(MOTIONS), grid, grid)
        return static, m.permute(0, 1, 3, 4, 2)


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


def _batch(rng: np.random.Generator, cfg: VisionPretrainConfig, synth: SynthConfig):
    clips = [generate_clip(rng, synth) for _ in range(cfg.clips_per_step)]
    tg = [dense_targets(c, cfg.vision["patch_size"], cfg.owner_min_fraction) for c in clips]
    frames = np.stack([c.frames for c in clips])  # B,T,H,W,3
    out = {k: torch.from_numpy(np.stack([t[k] for t in tg])) for k in tg[0]}
    return frames, out


def _losses(heads: DenseHeads, feats: torch.Tensor, tgt: dict, grid: int, context: int):
    static, motion = heads(feats, grid)
    nc, ns = len(COLOURS) + 1, len(SHAPES) + 1
    lc = F.cross_entropy(static[..., :nc].reshape(-1, nc), tgt["colour"].reshape(-1))
    ls = F.cross_entropy(static[..., nc:nc + ns].reshape(-1, ns), tgt["shape"].reshape(-1))
    fg = tgt["fg"]
    off = static[..., nc + ns:nc + ns + 2]
    ab = static[..., nc + ns + 2:]
    lo = (F.smooth_l1_loss(off[fg], tgt["offset"][fg], beta=0.25) if fg.any()
          else off.sum() * 0)
    # Absolute position in units of patches (x grid) so its scale matches the offset's.
    if ab.shape[-1] == 0:
        la = off.sum() * 0
    else:
        la = (F.smooth_l1_loss(ab[fg] * grid, tgt["absolute"][fg] * grid, beta=0.25) if fg.any()
              else ab.sum() * 0)
    mt = tgt["motion"][:, context:]
    mfg = mt >= 0
    lm = (F.cross_entropy(motion[mfg], mt[mfg]) if mfg.any() else motion.sum() * 0)
    with torch.no_grad():
        acc = {
            "colour_acc_fg": (static[..., :nc].argmax(-1) == tgt["colour"])[fg].float().mean().item(),
            "shape_acc_fg": (static[..., nc:nc + ns].argmax(-1) == tgt["shape"])[fg].float().mean().item(),
            "motion_acc_fg": (motion.argmax(-1) == mt)[mfg].float().mean().item() if mfg.any() else float("nan"),
            "offset_err_px": ((off[fg] - tgt["offset"][fg]).norm(dim=-1).mean().item() * 14) if fg.any() else float("nan"),
            "absolute_err_px": ((ab[fg] - tgt["absolute"][fg]).norm(dim=-1).mean().item() * grid * 14)
            if fg.any() and ab.shape[-1] else float("nan"),
        }
    return lc + ls + 2.0 * lo + 2.0 * la + lm, {
        "loss_colour": lc.item(), "loss_shape": ls.item(), "loss_offset": lo.item(),
        "loss_absolute": la.item(), "loss_motion": lm.item(), **acc}


def run_pretraining(cfg: VisionPretrainConfig, out: str | Path, resume: bool = True,
                    progress: bool = True, stop_at: int | None = None) -> Path:
    """Train (or resume) the dense pretraining stage; writes `<out>/vision.safetensors` and
    `<out>/vision_config.json` (the CLIPVisionConfig kwargs) at the end. Returns that file.

    `stop_at` ends the run after that step while keeping the LR schedule of `cfg.steps`
    (how a run that was stopped early is reproduced)."""
    from safetensors.torch import save_file

    from videomolmo.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from videomolmo.training.log import JsonlLogger

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    vit = build_vision(cfg.vision)
    if cfg.init:
        from safetensors.torch import load_file
        vit.load_state_dict(load_file(cfg.init))
    if cfg.sincos_positions:
        grid_side = cfg.vision["image_size"] // cfg.vision["patch_size"]
        with torch.no_grad():
            pe = vit.embeddings.position_embedding.weight
            pe.zero_()
            pe[1:] = sincos_2d(grid_side, pe.shape[1])
    heads = DenseHeads(cfg.vision["hidden_size"] * len(cfg.feature_layers), cfg.context,
                       absolute=cfg.absolute_target)
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
        loss, parts = _losses(heads, feats.view(B, T, grid * grid, -1), tgt, grid, cfg.context)
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
        if time.monotonic() - last_ck > cfg.checkpoint_every_s or step == end:
            save_checkpoint(out, step, state(), optimizer=opt, np_rng=rng,
                            extra={"cpu_s": cpu_before + time.process_time() - t0})
            last_ck = time.monotonic()
    final = out / "vision.safetensors"
    with atomic_path(final) as tmp:
        save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp))
    atomic_write_json(out / "vision_config.json", cfg.vision, indent=1)
    return final


def export_vision(out: str | Path) -> Path:
    """Write `<out>/vision.safetensors` + `vision_config.json` from the run's latest checkpoint
    (to use a run that was stopped early)."""
    from safetensors.torch import save_file

    from videomolmo.errors import CheckpointError
    from videomolmo.training.checkpoint import latest_checkpoint, load_checkpoint

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
