"""The temporal module: fuse the current frame's patch features with its l previous frames'.

Features of the previous frames are averaged (upstream VideoMolmo's running mean); current and
context features are grouped into 2x2 patch windows (`b n (h 2) (w 2) c -> (b n h w) 4 c`) and
fused per window. Variants (paper Table 6):
- `none`: single frame;
- `add`: x + g * context, g a per-channel gate (ones, or zeros with `temporal_init="zero"`);
- `concat`: token-space concatenation; the context gets its own block of image tokens in the
  prompt (see `Processor`), so this module adds nothing here;
- `cross_attention` (default): multi-head attention, query from the current window and key/value
  from the context window (no bias, fp32 attention), projected back and added residually.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def to_windows(x: torch.Tensor) -> torch.Tensor:
    """(B, n, G, G, C) grid -> (B*n*h*w, 4, C) 2x2 windows; odd grids get a zero row/col."""
    B, n, G, _, C = x.shape
    if G % 2:
        x = F.pad(x, (0, 0, 0, 1, 0, 1))
        G += 1
    h = G // 2
    x = x.reshape(B, n, h, 2, h, 2, C).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(B * n * h * h, 4, C)


def from_windows(w: torch.Tensor, B: int, n: int, G: int) -> torch.Tensor:
    """Inverse of `to_windows` (crops the padding row/col again)."""
    Gp = G + (G % 2)
    h = Gp // 2
    C = w.shape[-1]
    x = w.reshape(B, n, h, h, 2, 2, C).permute(0, 1, 2, 4, 3, 5, 6).reshape(B, n, Gp, Gp, C)
    return x[:, :, :G, :G]


class TemporalModule(nn.Module):
    """Per-window fusion of current (M, 4, C) and context (M, 4, C) features."""

    def __init__(self, variant: str, dim: int, heads: int, head_dim: int, init: str = "xavier") -> None:
        super().__init__()
        self.variant = variant
        self.heads, self.head_dim = heads, head_dim
        self.init_mode = init
        if variant == "cross_attention":
            inner = heads * head_dim
            self.wq = nn.Linear(dim, inner, bias=False)
            self.wk = nn.Linear(dim, inner, bias=False)
            self.wv = nn.Linear(dim, inner, bias=False)
            self.wo = nn.Linear(inner, dim, bias=False)
        elif variant == "add":
            self.gate = nn.Parameter(torch.ones(dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.variant == "cross_attention":
            if self.wq.weight.is_meta:
                return
            for lin in (self.wq, self.wk, self.wv, self.wo):
                nn.init.xavier_normal_(lin.weight)
            if self.init_mode == "zero":
                # Output zeroed: the module is the identity at init, so fine-tuning from
                # single-frame weights starts exactly where the single-frame model was.
                self.wo.weight.zero_()
        elif self.variant == "add":
            if not self.gate.is_meta:
                self.gate.fill_(0.0 if self.init_mode == "zero" else 1.0)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        if self.variant == "add":
            return x + self.gate.to(x.dtype) * ctx
        if self.variant != "cross_attention":
            return x
        M, T, _ = x.shape
        q = self.wq(x).view(M, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(ctx).view(M, ctx.shape[1], self.heads, self.head_dim).transpose(1, 2)
        v = self.wv(ctx).view(M, ctx.shape[1], self.heads, self.head_dim).transpose(1, 2)
        # fp32 attention, as upstream (`float32_attention`).
        att = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
        out = torch.matmul(att.softmax(-1), v.float()).to(x.dtype)
        out = out.transpose(1, 2).reshape(M, T, self.heads * self.head_dim)
        return x + self.wo(out)
