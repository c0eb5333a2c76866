"""The vision encoder: a stock transformers `CLIPVisionModel`, read out at several layers.

Molmo reads CLIP ViT-L/14-336 (23 of its 24 layers) at `vit_layers=[-2, -9]` of the block
outputs and concatenates them (2048 dims per patch), dropping the CLS token. Only the blocks up to
the deepest layer read are run; the rest exist so that checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class VisionEncoder(nn.Module):
    """(N, 3, S, S) CLIP-normalised crops -> (N, patches, width * len(feature_layers))."""

    def __init__(self, vcfg) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.cfg = vcfg
        clip_cfg = CLIPVisionConfig(
            hidden_size=vcfg.width,
            intermediate_size=vcfg.mlp_dim,
            num_hidden_layers=vcfg.layers,
            num_attention_heads=vcfg.heads,
            image_size=vcfg.image_size,
            patch_size=vcfg.patch_size,
            hidden_act=vcfg.act,
            layer_norm_eps=vcfg.layer_norm_eps,
            attention_dropout=0.0,
        )
        clip_cfg._attn_implementation = "sdpa"
        self.clip = CLIPVisionModel(clip_cfg)
        # Molmo has no post-LN (it reads hidden states, not the pooled CLS); drop its weights.
        self.clip.post_layernorm = nn.Identity()
        self.layer_ids = [l % vcfg.layers for l in vcfg.feature_layers]
        self.depth = max(self.layer_ids) + 1

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        # Padding crops (all -1, from batching) give zero features, as in Molmo.
        valid = ~torch.all(crops.flatten(1) == -1, dim=1)
        dtype = self.clip.embeddings.patch_embedding.weight.dtype
        x = self.clip.embeddings(crops.to(dtype))
        x = self.clip.pre_layrnorm(x)
        outs = []
        for layer in self.clip.encoder.layers[: self.depth]:
            x = layer(x, None)
            outs.append(x)
        feats = torch.cat([outs[i] for i in self.layer_ids], dim=-1)[:, 1:]
        return feats * valid[:, None, None].to(feats.dtype)


def resize_position_embedding(weight: torch.Tensor, positions: int) -> torch.Tensor:
    """A CLIP position embedding ((1 + g * g, d): class token, then the patch grid row by row)
    resized to `positions` = 1 + n * n by bicubic interpolation of the grid, so a ViT trained at
    one input size can be fine-tuned at another (a finer patch grid over the same images)."""
    g, n = round((weight.shape[0] - 1) ** 0.5), round((positions - 1) ** 0.5)
    if g * g + 1 != weight.shape[0] or n * n + 1 != positions:
        raise ValueError(f"position embeddings must be 1 + a square grid, got {weight.shape[0]} -> {positions}")
    if n == g:
        return weight.clone()
    grid = weight[1:].T.reshape(1, -1, g, g).float()
    grid = torch.nn.functional.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
    return torch.cat([weight[:1], grid.reshape(-1, n * n).T.to(weight.dtype)], 0)
