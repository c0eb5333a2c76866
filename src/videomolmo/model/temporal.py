"""The temporal module: fuse the current frame's patch features with its l previous frames'.

Features of the previous frames are averaged (upstream VideoMolmo's running mean); current and
context features are grouped into 2x2 patch windows (`b n (h 2) (w 2) c -> (b n h w) 4 c`) and
fused per window by the variant named in `ModelConfig.temporal`.

Variants live in `TEMPORAL_MODULES`; paper Table 6's are registered here:
- `none`: single frame (the context is never computed);
- `add`: x + g * context, g a per-channel gate;
- `concat`: token-space concatenation; the context gets its own block of image tokens in the
  prompt (see `Processor`), so the module itself adds nothing;
- `cross_attention` (default): multi-head attention, query from the current window and key/value
  from the context window (no bias, fp32 attention), projected back and added residually.

Adding a variant is one class in any module this one imports:

    @register_temporal("gated")
    class Gated(TemporalBase):
        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.vision.feature_dim, config.vision.feature_dim)

        def forward(self, x, ctx):          # (M, 4, C) current and context windows
            return x + torch.sigmoid(self.proj(ctx)) * ctx

The class attributes of `TemporalBase` tell the model, the processor and the checkpoint loader
what the variant needs; their defaults fit a module that fuses the context windows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.registry import ClassRegistry

__all__ = ["TEMPORAL_MODULES", "TemporalBase", "register_temporal", "temporal_class", "build_temporal",
           "to_windows", "from_windows"]

def build_temporal(config: Any) -> "TemporalBase":
    return temporal_class(config.temporal)(config)


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


class TemporalBase(nn.Module):
    """Per-window fusion of current (M, 4, C) and context (M, 4, C) features.

    Class attributes a variant may override:
    - `uses_context`: the model needs the previous frames (False: they are never encoded);
    - `context_tokens`: the context also gets its own block of image tokens in the prompt
      (token-space fusion; `forward` is then not called);
    - `supports_identity_init`: `temporal_init="zero"` makes the module the identity at init
      (fine-tuning from single-frame weights starts where the single-frame model was); a
      variant that sets it implements that in `reset_parameters`.
    """

    name: str = ""
    uses_context: bool = True
    context_tokens: bool = False
    supports_identity_init: bool = False

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.identity_init = getattr(config, "temporal_init", "xavier") == "zero"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """From-scratch initialisation; by default each submodule's own (`nn.Linear`'s, ...)."""
        for m in self.children():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return x


TEMPORAL_MODULES = ClassRegistry("temporal module", TemporalBase)
register_temporal = TEMPORAL_MODULES.register
temporal_class = TEMPORAL_MODULES.lookup


def _on_meta(*params: torch.Tensor) -> bool:
    return any(p.is_meta for p in params)


@register_temporal("none")
class NoTemporal(TemporalBase):
    """Single frame: no context, no weights."""

    uses_context = False


@register_temporal("concat")
class ConcatTemporal(TemporalBase):
    """Token-space concatenation: the context frames' mean gets its own image tokens."""

    context_tokens = True


@register_temporal("add")
class AddTemporal(TemporalBase):
    """x + g * context with a per-channel gate g (ones from scratch, zeros for identity init)."""

    supports_identity_init = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.gate = nn.Parameter(torch.ones(config.vision.feature_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if not _on_meta(self.gate):
            self.gate.fill_(0.0 if self.identity_init else 1.0)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return x + self.gate.to(x.dtype) * ctx


@register_temporal("cross_attention")
class CrossAttentionTemporal(TemporalBase):
    """The paper's module: attention from the current window to the context window."""

    supports_identity_init = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        dim = config.vision.feature_dim
        self.heads, self.head_dim = config.temporal_heads, config.temporal_head_dim
        inner = self.heads * self.head_dim
        self.wq = nn.Linear(dim, inner, bias=False)
        self.wk = nn.Linear(dim, inner, bias=False)
        self.wv = nn.Linear(dim, inner, bias=False)
        self.wo = nn.Linear(inner, dim, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if _on_meta(self.wq.weight):
            return
        for lin in (self.wq, self.wk, self.wv, self.wo):
            nn.init.xavier_normal_(lin.weight)
        if self.identity_init:
            self.wo.weight.zero_()

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        M, T, _ = x.shape
        q = self.wq(x).view(M, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(ctx).view(M, ctx.shape[1], self.heads, self.head_dim).transpose(1, 2)
        v = self.wv(ctx).view(M, ctx.shape[1], self.heads, self.head_dim).transpose(1, 2)
        # fp32 attention, as upstream (`float32_attention`).
        att = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
        out = torch.matmul(att.softmax(-1), v.float()).to(x.dtype)
        out = out.transpose(1, 2).reshape(M, T, self.heads * self.head_dim)
        return x + self.wo(out)


@register_temporal("cross_attention_3x3")
class NeighbourhoodCrossAttention(CrossAttentionTemporal):
    """Wider-window ablation: each current token attends to the 3x3 context neighbourhood
    centred on it, instead of its 2x2 window.

    Over the l=4 context frames a sprite moves 14-28 px (1-2 patches), so its trail lies in
    the same 2x2 window as its current centre only ~42% of the time; a 3x3 neighbourhood
    always holds a one-patch move. Same weights and init as `cross_attention`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.grid = config.vision.grid

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        M, _, C = x.shape
        G = self.grid
        h = (G + G % 2) // 2
        BN = M // (h * h)
        xg = from_windows(x, BN, 1, G).reshape(BN, G * G, C)
        cg = from_windows(ctx, BN, 1, G).reshape(BN, G, G, C).permute(0, 3, 1, 2)
        # (BN, C*9, G*G) -> (BN, G*G, 9, C): the 9 context tokens around every position.
        nb = F.unfold(F.pad(cg, (1, 1, 1, 1)), 3).view(BN, C, 9, G * G).permute(0, 3, 2, 1)
        inside = F.unfold(F.pad(torch.ones(1, 1, G, G, device=x.device), (1, 1, 1, 1)), 3)
        inside = inside.view(9, G * G).t() > 0  # (G*G, 9): False beyond the border
        Hh, D = self.heads, self.head_dim
        q = self.wq(xg).view(BN, G * G, Hh, 1, D)
        k = self.wk(nb).view(BN, G * G, 9, Hh, D).transpose(2, 3)
        v = self.wv(nb).view(BN, G * G, 9, Hh, D).transpose(2, 3)
        att = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(D)  # BN, GG, H, 1, 9
        att = att.masked_fill(~inside[None, :, None, None, :], float("-inf"))
        out = torch.matmul(att.softmax(-1), v.float()).to(x.dtype).reshape(BN, G * G, Hh * D)
        y = xg + self.wo(out)
        return to_windows(y.reshape(BN, 1, G, G, C))
