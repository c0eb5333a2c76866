"""The connector: 2x2 attention pooling (window mean as query) and the SwiGLU projector."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPool(nn.Module):
    """Molmo's `attention-meanq` pooling: one query (the window mean) over the window's tokens."""

    def __init__(self, dim: int, heads: int, head_dim: int, out_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.wq = nn.Linear(dim, inner, bias=True)
        self.wk = nn.Linear(dim, inner, bias=True)
        self.wv = nn.Linear(dim, inner, bias=True)
        self.wo = nn.Linear(inner, out_dim, bias=True)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, K, C) -> (M, out_dim)."""
        M, K, _ = windows.shape
        query = windows.mean(dim=1, keepdim=True)
        q = self.wq(query).view(M, 1, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(windows).view(M, K, self.heads, self.head_dim).transpose(1, 2)
        v = self.wv(windows).view(M, K, self.heads, self.head_dim).transpose(1, 2)
        att = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
        out = torch.matmul(att.softmax(-1).to(v.dtype), v)
        return self.wo(out.transpose(1, 2).reshape(M, self.heads * self.head_dim))


class Projector(nn.Module):
    """`w2(silu(w1 x) * w3 x)`, optionally after a LayerNorm (keeps a from-scratch model stable)."""

    def __init__(self, dim: int, hidden: int, out_dim: int, norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else None
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, out_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
