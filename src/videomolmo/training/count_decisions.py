"""Up-weighting the answer tokens that decide how many points the model gives.

In Molmo point text the count is never written as a number: it is a few single-character
choices -- the first character after the leading space (``T`` of "There are none." or ``<`` of a point), ``s`` or a
space after ``<point`` (one point or several), and, inside a ``<points`` tag, ``x`` or ``a``
after each ``yN="..." `` (another point, or the closing ``alt``). Those are about 3 of an
answer's 40-80 characters, so the plain answer loss spends almost all of its gradient on
coordinate digits and labels. The Stage-12 model under-counted groups of three and more (where
a point was missing its stop choice gave p(another point) 0.002-0.43, median 0.15;
BENCHMARKS.md): this loss gives exactly those choices `weight` times their usual share
(measured: no effect on the count).

The weighted loss divides by the number of labelled tokens, not by the sum of the weights, so
every other token keeps the gradient it has under the plain loss.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from videomolmo.errors import ConfigError
from videomolmo.model.preprocess import IGNORE_INDEX

_DECISION = re.compile(r'<point|y\d+="[^"]*" ')


def decision_offsets(text: str) -> list[int]:
    """Character offsets in an answer `text` at which the point count is decided."""
    if not text.strip():
        return []
    out = [len(text) - len(text.lstrip())]  # answers are encoded with a leading space
    in_points = False
    for m in _DECISION.finditer(text):
        if m.group() == "<point":
            in_points = text.startswith("<points", m.start())
            out.append(m.end())
        elif in_points and m.end() < len(text):
            out.append(m.end())
    return sorted({o for o in out if o < len(text)})


def decision_weights(labels: torch.Tensor, tokenizer, weight: float) -> torch.Tensor:
    """(B, L) float weights for `labels` (IGNORE_INDEX outside the answer): `weight` at the
    tokens holding a count decision, 1 at every other labelled token, 0 elsewhere. Character
    offsets map to tokens by decoding the answer one token at a time, so a multi-character
    token (a BPE vocabulary's ' x2', say) is a decision token when it holds a decision character."""
    if not weight >= 0:
        raise ConfigError(f"train: the count-decision weight must be >= 0, got {weight}")
    out = (labels != IGNORE_INDEX).float()
    for b in range(labels.shape[0]):
        pos = (labels[b] != IGNORE_INDEX).nonzero().flatten().tolist()
        ids = [int(labels[b, p]) for p in pos]
        if getattr(tokenizer, "eos_token_id", None) in ids:
            cut = ids.index(tokenizer.eos_token_id)
            pos, ids = pos[:cut], ids[:cut]
        spans, n = [], 0
        for i in ids:
            k = len(tokenizer.decode([i]))
            spans.append((n, n + k))
            n += k
        wanted = decision_offsets(tokenizer.decode(ids))
        for p, (lo, hi) in zip(pos, spans):
            if any(lo <= o < hi for o in wanted):
                out[b, p] = weight
    return out


def weighted_answer_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy with per-label weights (the model's own shift: the logit at
    position i predicts the label at i + 1), divided by the number of labelled tokens."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    w = weights[:, 1:].to(shift_logits.dtype)
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                         ignore_index=IGNORE_INDEX, reduction="none")
    n = (shift_labels != IGNORE_INDEX).sum()
    if int(n) == 0:
        return shift_logits.sum() * 0.0
    return (ce * w.reshape(-1)).sum() / n
