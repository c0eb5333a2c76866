"""Auxiliary per-token attribute loss at the patch head's decoder layer (training only).

A linear probe of the Stage-7 model (`benchmarks/diag_motion_layers.py`, `--target shape`)
found the owning sprite's shape readable from the ViT's tokens (0.76) and the temporal
module's output (0.80) but only at 0.60 from the connector's output, and no better anywhere in
the decoder; motion goes the same way (0.70 -> 0.64 -> 0.47). The patch head, and the text,
read the decoder: what the connector drops they cannot use, and counting and shape-only absent
queries are exactly where the model fails. This loss asks the decoder's image tokens at the
head's layer to keep both: a linear head predicts the shape and the motion of the sprite that
owns each patch (background patches are ignored), so the connector and the lower decoder layers
are trained to carry them. The head is dropped from shipped files.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.errors import ConfigError
from videomolmo.model.point_head import gather_image_tokens
from videomolmo.synth import MOTIONS, SHAPES
from videomolmo.training.motion import masks_by, motion_targets, stack_motion_targets


def shape_masks(clip, t: int) -> np.ndarray:
    """(len(SHAPES), H, W) bool: the visible pixels at frame t of the sprites of each shape."""
    return masks_by(clip, t, "shape", SHAPES)


def attribute_targets(processor, examples, n_crops: int, tokens: int) -> torch.Tensor:
    """(B, 2, n_crops, tokens): per patch the owning sprite's shape index, then its motion
    index (-1 for background), as `motion.py` assigns owners."""
    if any(e.shape_masks is None or e.motion_masks is None for e in examples):
        raise ConfigError("train: the attribute loss needs per-sprite shapes and motions; only the synthetic "
                          "stream has them")
    shapes = stack_motion_targets([motion_targets(processor, e.shape_masks) for e in examples], n_crops, tokens)
    motions = stack_motion_targets([motion_targets(processor, e.motion_masks) for e in examples], n_crops, tokens)
    return torch.stack([shapes, motions], dim=1)


ATTRIBUTE_AT = ("head", "input")  # the grounding head's decoder layer, or the decoder's input


def check_attribute_at(where: str) -> str:
    if where not in ATTRIBUTE_AT:
        raise ConfigError(f"train: --attribute-at must be one of {', '.join(ATTRIBUTE_AT)}, got {where!r}")
    return where


class InputTap:
    """Keeps the decoder's last input embeddings (the connector's image tokens in place), so the
    loss can ask the connector itself to keep the attributes and leave the decoder's layers free."""

    def __init__(self, model) -> None:
        self.embeds: torch.Tensor | None = None
        model.llm.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        self.embeds = kwargs.get("inputs_embeds")

    def take(self) -> torch.Tensor:
        if self.embeds is None:
            raise ConfigError("train: the decoder ran without input embeddings to read")
        out, self.embeds = self.embeds, None
        return out


class AttributeHead(nn.Module):
    """Per image token: logits of the owning sprite's shape and motion."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.shape = nn.Linear(hidden, len(SHAPES))
        self.motion = nn.Linear(hidden, len(MOTIONS))

    def loss(self, hidden: torch.Tensor, image_input_idx: torch.Tensor, shape_targets: torch.Tensor,
             motion_targets: torch.Tensor) -> tuple[torch.Tensor, float, float]:
        """hidden (B, L, D) at the head's layer; targets (B, n, T) class index or -1.
        (mean of the two cross-entropies, shape accuracy, motion accuracy)."""
        h, valid = gather_image_tokens(hidden, image_input_idx)
        h = self.norm(h.float())
        total, accs = hidden.new_zeros((), dtype=torch.float32), []
        for proj, tgt in ((self.shape, shape_targets), (self.motion, motion_targets)):
            t = tgt.reshape(valid.shape).to(hidden.device)[valid]
            sel = t >= 0
            if not bool(sel.any()):
                accs.append(float("nan"))
                continue
            logits = proj(h[sel])
            total = total + F.cross_entropy(logits, t[sel]) / 2
            accs.append(float((logits.argmax(-1) == t[sel]).float().mean()))
        return total, accs[0], accs[1]
