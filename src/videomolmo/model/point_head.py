"""Patch-selection pointing: the point is decoded from which patches the model selects.

The text decoder writes a point as coordinate digits, and on the tiny CPU model reading a
position out as digits was the slow part of learning: at step 400 the grounding signal already
picked a patch of the sprite every time while the decoded point was 31 px off (TRAINING.md). In
the spirit of MolmoPoint (2026), `point_head="patch"` lets the model point by selection: a
linear head on a decoder layer's hidden state at every image token scores how much of its
patch the referred objects cover (the same target as the training-time grounding loss, so that
loss now trains a head that ships). Decoding keeps the text's decision of *how many* points
(or "none") and takes *where* from the selection: the connected groups of selected patches,
strongest first, each refined to the coverage-weighted centroid of its patch centres, a
sub-patch position. The Molmo text format stays what the 7B presets write.

It needs one image token per patch (`crop_mode="resize"`, no pooling: the tiny presets).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.errors import ConfigError

POINT_HEADS = ("text", "patch")
# "patch": the text says how many, the selection says where; "patch-count": the selection
# says both (one point per selected group; none selected = "none"); "patch-extra": "patch",
# plus each further group the head selects at EXTRA_THRESHOLD that the text's points missed
# (the text under-counts groups of 2-4 look-alikes that the head does select).
# `videomolmo eval --point-decode` lists these in its help (kept torch-free, so spelled there).
POINT_DECODES = ("text", "patch", "patch-count", "patch-extra")
# A patch is selected when the head says the referred objects cover at least this much of it
# (the head is trained on covered fractions; 0.5 = "mostly the object").
SELECT_THRESHOLD = 0.5
# "patch-extra" adds a group only where the head is this sure (chosen on the val stream,
# BENCHMARKS.md "Reading the count from the head too").
EXTRA_THRESHOLD = 0.5


def resolve_layer(layer: int, n_layers: int) -> int:
    """Layer index into `hidden_states` (0 = embeddings); negative counts from the top;
    0 means the middle layer."""
    k = n_layers // 2 if layer == 0 else (layer if layer > 0 else n_layers + 1 + layer)
    if not 1 <= k <= n_layers:
        raise ConfigError(f"point head: decoder layer {layer} is outside 1..{n_layers}")
    return k


def gather_image_tokens(hidden: torch.Tensor, image_input_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states at the image tokens (M, D), validity (B, n*T)) for `image_input_idx`
    (B, n, T) positions, -100 = no token."""
    B = hidden.shape[0]
    idx = image_input_idx.reshape(B, -1).to(hidden.device)
    valid = idx >= 0
    b = torch.arange(B, device=hidden.device)[:, None].expand_as(idx)
    return hidden[b[valid], idx[valid]], valid


class PatchHead(nn.Module):
    """Per image token: the logit of the fraction of its patch the referred objects cover."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, 1)

    def coverage(self, hidden: torch.Tensor, image_input_idx: torch.Tensor) -> torch.Tensor:
        """(B, n, T) predicted coverage in [0, 1]; 0 where there is no image token."""
        h, valid = gather_image_tokens(hidden, image_input_idx)
        out = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device)
        out[valid] = torch.sigmoid(self.proj(h.float()).squeeze(-1))
        return out.reshape(image_input_idx.shape)

    def loss(self, hidden: torch.Tensor, image_input_idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean BCE over the image tokens against `targets` (B, n, T) in [0, 1]."""
        h, valid = gather_image_tokens(hidden, image_input_idx)
        tgt = targets.reshape(valid.shape).to(hidden.device)
        logits = self.proj(h.float()).squeeze(-1)
        return F.binary_cross_entropy_with_logits(logits, tgt[valid].float())


def select_points(coverage: np.ndarray, n_points: int, patch_size: int,
                  threshold: float = SELECT_THRESHOLD) -> np.ndarray:
    """Up to `n_points` (x, y) in the model's input-image pixels from a (G, G) coverage grid.

    Selected patches (coverage >= threshold) are grouped 8-connected; the groups are taken by
    their total coverage, strongest first, and each gives the coverage-weighted centroid of its
    patch centres. With fewer groups than `n_points` the result is shorter: the caller decides
    what stands in for the rest."""
    from scipy import ndimage

    cov = np.asarray(coverage, dtype=np.float64)
    if cov.ndim != 2:
        raise ConfigError(f"select_points: coverage must be a (G, G) grid, got shape {cov.shape}")
    if n_points <= 0:
        return np.zeros((0, 2))
    labels, n = ndimage.label(cov >= threshold, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    ys, xs = np.mgrid[0:cov.shape[0], 0:cov.shape[1]]
    groups = []
    for g in range(1, n + 1):
        sel = labels == g
        w = cov[sel]
        cx = float(((xs[sel] + 0.5) * w).sum() / w.sum()) * patch_size
        cy = float(((ys[sel] + 0.5) * w).sum() / w.sum()) * patch_size
        groups.append((float(w.sum()), cx, cy))
    groups.sort(key=lambda g: -g[0])
    return np.array([[cx, cy] for _, cx, cy in groups[:n_points]], dtype=np.float64).reshape(-1, 2)


def patch_points(coverage: np.ndarray, text_points: np.ndarray, frame_hw: tuple[int, int],
                 image_size: int, patch_size: int, threshold: float = SELECT_THRESHOLD,
                 count_from_selection: bool = False, extra_threshold: float | None = None) -> np.ndarray:
    """The patch-decoded answer in frame pixels: as many points as the text wrote
    (`text_points` (N, 2), frame px), placed by the selection; where the selection has fewer
    groups than the text has points, the text points farthest from every selected one fill in.
    `count_from_selection`: one point per selected group instead, whatever the text says.
    `extra_threshold`: when the text wrote any point, also every group selected at that
    threshold lying more than a patch from every point the text's count placed ("none" stays "none")."""
    from videomolmo.model.preprocess import content_fraction, padded_to_frame

    text_points = np.asarray(text_points, dtype=np.float64).reshape(-1, 2)
    grid = np.asarray(coverage, dtype=np.float64).reshape(image_size // patch_size, image_size // patch_size)
    # A letterboxed frame's padding holds no object, whatever the head says of it there (it
    # was trained on square synthetic frames, which have none).
    grid = np.where(content_fraction(frame_hw, image_size, patch_size) >= 0.5, grid, 0.0)
    n = grid.size if count_from_selection else len(text_points)
    chosen = padded_to_frame(select_points(grid, n, patch_size, threshold), frame_hw, image_size)
    if count_from_selection:
        return chosen
    if len(chosen) < n:
        if len(chosen):
            d = np.linalg.norm(text_points[:, None] - chosen[None], axis=-1).min(1)
            rest = text_points[np.argsort(-d)[: n - len(chosen)]]
        else:
            rest = text_points
        chosen = np.concatenate([chosen, rest]).reshape(-1, 2)
    if extra_threshold is None or not len(chosen):
        return chosen
    groups = padded_to_frame(select_points(grid, grid.size, patch_size, extra_threshold), frame_hw, image_size)
    one_patch = patch_size * max(frame_hw) / image_size
    far = [g for g in groups if np.linalg.norm(chosen - g, axis=1).min() > one_patch]
    return np.concatenate([chosen, np.reshape(far, (-1, 2))]) if far else chosen


def read_points(decode: str, text_points: np.ndarray, coverage, frame_hw: tuple[int, int], config) -> np.ndarray:
    """A frame's points (N, 2, frame px) under `decode`: the text's as they are, or placed (and
    for "patch-count" counted) by the head's `coverage` (n, T) of that frame."""
    if decode == "text":
        return text_points
    cov = coverage.float().cpu().numpy() if isinstance(coverage, torch.Tensor) else np.asarray(coverage)
    return patch_points(cov, text_points, frame_hw, config.vision.image_size, config.vision.patch_size,
                        count_from_selection=decode == "patch-count",
                        extra_threshold=EXTRA_THRESHOLD if decode == "patch-extra" else None)


def resolve_point_decode(mode: str | None, config) -> str:
    """`mode`, checked; None = the model's own way ("patch-extra" with the head, else "text")."""
    return check_point_decode(mode or ("patch-extra" if getattr(config, "point_head", "text") == "patch" else "text"),
                              config)


def check_point_decode(mode: str, config) -> str:
    """`mode` if the model can decode that way: the patch modes need `point_head="patch"`."""
    if mode not in POINT_DECODES:
        raise ConfigError(f"point decode must be one of {', '.join(POINT_DECODES)}, got {mode!r}")
    if mode != "text" and getattr(config, "point_head", "text") != "patch":
        raise ConfigError(f"model {config.name!r} has no patch pointing head (point_head={config.point_head!r}); "
                          "decode its points from the text")
    return mode
