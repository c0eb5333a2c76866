"""Auxiliary per-token motion loss on the temporal module's output (training only).

Trained through the answer loss alone, the bundled model's temporal module barely moved from
its init (q/k/v ~12%) and the model ignored its context: motion-only F1 was the same with the
right context, the current frame repeated, another clip's context or the module off. This
loss gives the module a direct signal, like the grounding head does for the decoder: a
linear head reads every patch token of the module's output and predicts the motion of the
sprite that owns the patch (left / right / up / down / still; background patches are
ignored). Only a module that fuses the context into the frame's tokens can be supervised so
(not `none`, not token-space `concat`). The head is dropped from shipped files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.errors import ConfigError
from videomolmo.model.temporal import from_windows, temporal_class
from videomolmo.synth import MOTIONS
from videomolmo.training.grounding import MOTION_HEAD_PREFIX  # noqa: F401  (re-exported)

OWNER_MIN_FRACTION = 0.10  # of a patch, for a sprite to own it (as the ViT pretraining)


class MotionHead(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, len(MOTIONS))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(tokens.float()))

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """tokens (B, n, T, C), targets (B, n, T) motion index or -1; (CE, accuracy)."""
        logits = self(tokens)
        tgt = targets.to(logits.device)
        sel = tgt >= 0
        if not bool(sel.any()):
            return logits.sum() * 0.0, float("nan")
        loss = F.cross_entropy(logits[sel], tgt[sel])
        acc = float((logits[sel].argmax(-1) == tgt[sel]).float().mean())
        return loss, acc


class TemporalTap:
    """Keeps the temporal module's last output (a forward hook), as (B, n, patches, C)."""

    def __init__(self, model) -> None:
        cls = temporal_class(model.config.temporal)
        if not cls.uses_context or cls.context_tokens:
            raise ConfigError(f"train: the motion loss reads the temporal module's fused tokens; "
                              f"temporal={model.config.temporal!r} does not fuse any")
        if model.config.pool != "none":
            raise ConfigError("train: the motion loss needs one token per patch (pool='none')")
        self.grid = model.config.vision.grid
        self.out: torch.Tensor | None = None
        model.temporal.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.out = output

    def take(self, batch: int, crops: int) -> torch.Tensor:
        if self.out is None:
            raise ConfigError("train: the temporal module did not run (no context in the batch?)")
        out, self.out = self.out, None
        G = self.grid
        return from_windows(out, batch, crops, G).reshape(batch, crops, G * G, out.shape[-1])


def masks_by(clip, t: int, attribute: str, values: tuple[str, ...]) -> np.ndarray:
    """(len(values), H, W) bool: the visible pixels at frame t of the sprites whose `attribute`
    (a `Sprite` field: motion, shape, ...) is each of `values`."""
    K, _, H, W = clip.masks.shape
    out = np.zeros((len(values), H, W), bool)
    for k, sp in enumerate(clip.sprites):
        out[values.index(getattr(sp, attribute))] |= clip.masks[k, t]
    return out


def motion_masks(clip, t: int) -> np.ndarray:
    """(len(MOTIONS), H, W) bool: the visible pixels at frame t of the sprites of each motion."""
    return masks_by(clip, t, "motion", MOTIONS)


def motion_targets(processor, masks: np.ndarray) -> np.ndarray:
    """(n_crops, tokens) motion index of the patch's main sprite motion, -1 for background:
    `processor.patch_targets` of each motion's mask, so targets line up with the tokens."""
    frac = np.stack([processor.patch_targets(m) for m in masks])  # (5, n, T)
    tgt = frac.argmax(0).astype(np.int64)
    tgt[frac.max(0) < OWNER_MIN_FRACTION] = -1
    return tgt


def stack_motion_targets(targets: list[np.ndarray | None], n_crops: int, tokens: int) -> torch.Tensor:
    if any(t is None for t in targets):
        raise ConfigError("train: the motion loss needs per-sprite motions; only the synthetic stream has them")
    out = torch.full((len(targets), n_crops, tokens), -1, dtype=torch.long)
    for b, t in enumerate(targets):
        out[b, :t.shape[0]] = torch.from_numpy(t)
    return out
