"""Molmo's image preprocessing and prompt layout, turned into model inputs.

`Processor(config, tokenizer)` maps `(frame, previous frames, query, optional answer)` to one
example (numpy arrays); `collate(examples, pad_id, padding_side)` pads a batch into tensors.

Image path (Molmo-7B-D, `crop_mode="overlap-and-resize-c2"`): the tiling is chosen by
`select_tiling` on the image minus the overlap margins (crop window = crop - margins), the image is
resized preserving aspect ratio and zero-padded to the tiling, cut into overlapping crops, and a
global crop of the whole image goes first. Pixels are normalised with the CLIP mean/std *after*
padding, as Molmo does. `crop_mode="resize"` is the single-crop path used by the tiny presets.

Token layout of one image: `<im_start>` + rows of (`<im_patch>` x cols + `<im_col>`) + `<im_end>`,
first for the global crop, then for the high-res grid (overlap patches dropped: index -100).
Prompt: BOS, image tokens, `" User: {query} Assistant:"` (Molmo), or with
`prompt_order="query_first"`: BOS, `" User: {query}"`, image tokens, `" Assistant:"`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from videomolmo.errors import ConfigError, VideoError
from videomolmo.model.temporal import temporal_class
from videomolmo.settings import check_query

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
IGNORE_INDEX = -100


def select_tiling(h: float, w: float, patch_size: int, max_crops: int) -> np.ndarray:
    """Molmo's choice of crop grid (rows, cols) for an image of size h x w (pixels).

    Prefers the tiling that needs the least upscaling; if every tiling needs downscaling, the one
    that downscales least. Ties favour fewer crops, then fewer rows.
    """
    tilings = [(i, j) for i in range(1, max_crops + 1) for j in range(1, max_crops + 1) if i * j <= max_crops]
    tilings.sort(key=lambda t: (t[0] * t[1], t[0]))
    candidates = np.array(tilings, dtype=np.int32)
    resolutions = candidates * patch_size
    size = np.array([h, w], dtype=np.float32)
    with np.errstate(divide="ignore"):
        scale_d = resolutions.astype(np.float32) / size
    scale = np.min(scale_d, axis=-1, keepdims=True)
    if np.all(scale < 1):
        ix = np.argmax(scale)
    else:
        ix = np.argmin(np.where(scale < 1.0, 10e9, scale))
    return candidates[ix]


def letterbox(frame_hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a frame of `frame_hw` inside a `resize_and_pad` image of
    `size` (h, w): the aspect-preserving resize, centred."""
    (h, w), (dh, dw) = frame_hw, size
    # float32 arithmetic, as the training code did (it very rarely changes the rounding).
    scale = min(np.float32(dh) / np.float32(h), np.float32(dw) / np.float32(w))
    sh = max(1, int(np.float32(h) * scale))
    sw = max(1, int(np.float32(w) * scale))
    return (dh - sh) // 2, (dw - sw) // 2, sh, sw


def content_fraction(frame_hw: tuple[int, int], size: int, patch: int) -> np.ndarray:
    """(size/patch, size/patch) fraction of each patch of a `resize_and_pad` image that holds
    the frame rather than padding."""
    top, left, sh, sw = letterbox(frame_hw, (size, size))
    real = np.zeros((1, size, size), dtype=bool)
    real[0, top:top + sh, left:left + sw] = True
    return _patch_fraction(real, patch).reshape(size // patch, size // patch)


def resize_and_pad(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Aspect-preserving bilinear (antialiased) resize into `size`, centred, zero-padded.

    Returns the float32 image in [0, 1] and a bool mask of the real (non-padding) pixels.
    """
    import torch
    import torch.nn.functional as F

    dh, dw = size
    top, left, sh, sw = letterbox(image.shape[:2], size)
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    t = F.interpolate(t, size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
    out = t.clamp(0.0, 1.0)[0].permute(1, 2, 0).numpy()
    pad = [(top, dh - sh - top), (left, dw - sw - left)]
    mask = np.pad(np.ones((sh, sw), dtype=bool), pad)
    out = np.pad(out, pad + [(0, 0)])
    return out, mask


def padded_to_frame(points: np.ndarray, frame_hw: tuple[int, int], size: int) -> np.ndarray:
    """(N, 2) (x, y) in a `resize_and_pad(frame, (size, size))` image -> frame pixels (the
    inverse of that resize's scale and centring)."""
    h, w = frame_hw
    top, left, sh, sw = letterbox(frame_hw, (size, size))
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(pts)
    out[:, 0] = np.clip((pts[:, 0] - left) * (w / sw), 0, w - 1e-6)
    out[:, 1] = np.clip((pts[:, 1] - top) * (h / sh), 0, h - 1e-6)
    return out


def normalize(image: np.ndarray) -> np.ndarray:
    return (image - CLIP_MEAN) / CLIP_STD


def _patch_fraction(mask: np.ndarray, patch: int) -> np.ndarray:
    """(n, S, S) bool pixel masks -> (n, S/p * S/p) fraction of real pixels per patch."""
    n, s, _ = mask.shape
    g = s // patch
    m = mask.reshape(n, g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(n, g * g, patch * patch)
    return m.astype(np.float32).mean(-1)


@dataclass
class ImageInputs:
    """One frame, preprocessed: what the vision encoder and the token layout need."""

    crops: np.ndarray  # (n_crops, 3, S, S) float32, CLIP-normalised
    image_masks: np.ndarray  # (n_crops, n_patches) float32 fraction of real pixels (-1: quirk row)
    tokens: np.ndarray  # (n_tokens,) int64 image token layout
    patch_idx: np.ndarray  # (n_crops, tokens_per_crop) int64 index into `tokens`; -100 = dropped


def _layout_rows(rows: int, cols: int, tok) -> list[int]:
    return [tok.im_start_id] + ([tok.im_patch_id] * cols + [tok.im_col_id]) * rows + [tok.im_end_id]


def build_image_input_idx(tokens: np.ndarray, patch_order: np.ndarray | None, tokens_per_crop: int,
                          im_patch_id: int) -> np.ndarray:
    """Map each (crop, pooled patch) to the position of its `<im_patch>` token (-100: dropped)."""
    positions = np.nonzero(tokens == im_patch_id)[0].astype(np.int64)
    if patch_order is not None:
        order = patch_order.reshape(-1)
        valid = order >= 0
        n_valid = int(valid.sum())
        if n_valid != len(positions):
            raise AssertionError("image token layout does not match the patch ordering")
        # patch_order gives each kept patch its rank in raster order; invert it so that each
        # patch (in crop order) finds its token.
        sorted_ix = np.zeros([len(positions)], np.int64)
        sorted_ix[order[valid]] = np.arange(n_valid)
        ex = np.full(order.shape, -1, dtype=np.int64)
        ex[valid] = sorted_ix
        keep = ex >= 0
        positions = np.where(keep, positions[np.where(keep, ex, 0)], IGNORE_INDEX)
    return positions.reshape(-1, tokens_per_crop)


class Processor:
    """Frames + query (+ answer) -> model inputs, following a `ModelConfig`.

    Call it as `processor(frame, context, query, answer=None)`:
    - `frame`: RGB uint8 (H, W, 3);
    - `context`: the raw frames before it, oldest first (any number; only the last
      `config.context_frames` are used and black frames pad the start, as upstream);
    - `answer`: target text (e.g. Molmo point text) for training; a leading space is added if
      missing, as Molmo's answers start with one, and EOS is appended. Only answer + EOS
      tokens get labels; everything else is -100.
    - `image`: `encode_image(frame)` computed earlier (reused, not recomputed); with
      `frame=None` no context crops are built (callers then pass context features).
    Returns a dict of numpy arrays: `input_ids`, `labels`, `images`, `image_masks`,
    `image_input_idx`, `context_images` (l, n_crops, 3, S, S) when the model has a temporal
    module, and `context_input_idx` for the `concat` variant (the context block's tokens).
    """

    def __init__(self, config, tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.pool = 2 if config.pool != "none" else 1

    # -- images -------------------------------------------------------------------------------
    def check_frame(self, frame: np.ndarray) -> None:
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise VideoError(f"frame must be an RGB array of shape (H, W, 3), got {shape}")
        if frame.dtype != np.uint8:
            raise VideoError(f"frame must be uint8 RGB, got dtype {frame.dtype}")
        p = self.config.vision.patch_size
        if frame.shape[0] < p or frame.shape[1] < p:
            raise VideoError(
                f"frame of {frame.shape[1]}x{frame.shape[0]} px is smaller than one {p}x{p} patch"
            )

    def encode_image(self, frame: np.ndarray) -> ImageInputs:
        """Crops, padding masks, token layout and patch->token map of one frame."""
        self.check_frame(frame)
        cfg, tok = self.config, self.tokenizer
        v = cfg.vision
        d, size, grid, p = v.patch_size, v.image_size, v.grid, self.pool
        tw = th = (grid + p - 1) // p
        tokens_per_crop = tw * th
        if cfg.crop_mode == "resize":
            img, mask = resize_and_pad(frame, (size, size))
            crops = normalize(img)[None]
            masks = _patch_fraction(mask[None], d)
            tokens = np.array(_layout_rows(th, tw, tok), dtype=np.int64)
            order = None
        else:
            crops, masks, tokens, order = self._overlap_crops(frame, tokens_per_crop, tw, th)
        idx = build_image_input_idx(tokens, order, tokens_per_crop, tok.im_patch_id)
        crops = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32)
        return ImageInputs(crops=crops, image_masks=masks.astype(np.float32), tokens=tokens, patch_idx=idx)

    def patch_targets(self, mask: np.ndarray) -> np.ndarray:
        """(n_crops, tokens_per_crop) fraction of each image token's patch covered by `mask`
        (H, W bool, in frame pixels), laid out like `encode_image`'s tokens.

        Only for the single-crop, unpooled layout (one token per patch): the auxiliary
        grounding loss of the from-scratch presets."""
        cfg = self.config
        if cfg.crop_mode != "resize" or self.pool != 1:
            raise ConfigError(f"model {cfg.name!r}: patch targets need crop_mode='resize' and no pooling")
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ConfigError(f"patch_targets: mask must be (H, W), got shape {m.shape}")
        size = cfg.vision.image_size
        # The same resize and padding as the image, so targets line up with its patches.
        img, _ = resize_and_pad((m.astype(np.uint8) * 255)[..., None], (size, size))
        return _patch_fraction(img[None, ..., 0], cfg.vision.patch_size)

    def _overlap_crops(self, frame, tokens_per_crop, tw, th):
        cfg, tok = self.config, self.tokenizer
        v = cfg.vision
        d, size, grid, p = v.patch_size, v.image_size, v.grid, self.pool
        lm, rm = cfg.overlap_margins
        total_margin = d * (lm + rm)
        window_patches = grid - (lm + rm)
        window = window_patches * d
        h, w = frame.shape[:2]
        tiling = select_tiling(h - total_margin, w - total_margin, window, cfg.max_crops)
        src, img_mask = resize_and_pad(frame, (int(tiling[0]) * window + total_margin,
                                               int(tiling[1]) * window + total_margin))
        src = normalize(src)
        crops, masks, orders = [], [], []
        on = 0
        for i in range(tiling[0]):
            y0 = i * window
            cy0 = 0 if i == 0 else lm // p
            ch = grid - (lm + rm) + (lm if i == 0 else 0) + (rm if i == tiling[0] - 1 else 0)
            for j in range(tiling[1]):
                x0 = j * window
                cx0 = 0 if j == 0 else lm // p
                cw = grid - (lm + rm) + (lm if j == 0 else 0) + (rm if j == tiling[1] - 1 else 0)
                pw, ph = (cw + p - 1) // p, (ch + p - 1) // p
                block = np.arange(on, on + ph * pw, dtype=np.int64).reshape(ph, pw)
                orders.append(np.pad(block, [[cy0, th - ph - cy0], [cx0, tw - pw - cx0]], constant_values=-1))
                crops.append(src[y0:y0 + size, x0:x0 + size])
                masks.append(img_mask[y0:y0 + size, x0:x0 + size])
                on += ph * pw
        crops = np.stack(crops)
        masks = _patch_fraction(np.stack(masks), d)
        order = np.stack(orders).reshape(-1)
        valid = order >= 0
        # Numbered crop by crop above; re-rank in left-to-right raster order over the whole image.
        order_rh = order.reshape(tiling[0], tiling[1], th, tw).transpose(0, 2, 1, 3).reshape(-1)
        order[valid] = order_rh[order_rh >= 0]

        def n_patches(n_tiles: int) -> int:
            if n_tiles > 1:
                left = (window_patches + lm + p - 1) // p * p
                mid = (window_patches + p - 1) // p * p
                right = (window_patches + rm + p - 1) // p * p
                return left + (n_tiles - 2) * mid + right
            return (grid + p - 1) // p * p

        rows, cols = n_patches(int(tiling[0])) // p, n_patches(int(tiling[1])) // p
        hi_res = _layout_rows(rows, cols, tok)
        glob, glob_mask = resize_and_pad(frame, (size, size))
        crops = np.concatenate([normalize(glob)[None], crops], 0)
        order = np.where(order >= 0, order + tokens_per_crop, -1)
        order = np.concatenate([np.arange(tokens_per_crop), order])
        tokens = np.array(_layout_rows(th, tw, tok) + hi_res, dtype=np.int64)
        if cfg.padding_mask_quirk:
            # What the released checkpoints saw: the global crop's row goes at the end (as -1).
            masks = np.pad(masks, [[0, 1], [0, 0]], constant_values=-1)
        else:
            masks = np.concatenate([_patch_fraction(glob_mask[None], d), masks], 0)
        return crops, masks, tokens, order

    def black_frame(self, like: np.ndarray) -> np.ndarray:
        return np.zeros_like(like)

    def context_frames(self, frame: np.ndarray, context: Sequence[np.ndarray] | None) -> list[np.ndarray]:
        """The last `l` previous frames, black frames padding the start of the video."""
        l = self.config.context_frames
        ctx = list(context or [])[-l:] if l else []
        for c in ctx:
            self.check_frame(c)
            if c.shape != frame.shape:
                raise VideoError(f"context frame of shape {c.shape} differs from the frame's {frame.shape}")
        return [self.black_frame(frame)] * (l - len(ctx)) + ctx

    # -- text ---------------------------------------------------------------------------------
    def prompt_ids(self, query: str, image_tokens: np.ndarray, context_tokens: np.ndarray | None):
        """Token ids of the prompt and the offsets of the image (and context) blocks."""
        check_query(query)  # validation only: the text is tokenised as given
        tok = self.tokenizer
        blocks = [] if context_tokens is None else [context_tokens]
        blocks.append(image_tokens)
        ids: list[int] = [tok.bos_token_id]
        offsets = []
        if self.config.prompt_order == "query_first":
            ids += tok.encode(" User: " + query.strip())
            for b in blocks:
                offsets.append(len(ids))
                ids += b.tolist()
            ids += tok.encode(" Assistant:")
        else:
            for b in blocks:
                offsets.append(len(ids))
                ids += b.tolist()
            ids += tok.encode(" User: " + query.strip() + " Assistant:")
        return ids, offsets

    def __call__(self, frame: np.ndarray, context: Sequence[np.ndarray] | None, query: str,
                 answer: str | None = None, image: ImageInputs | None = None) -> dict[str, np.ndarray]:
        cfg = self.config
        img = image if image is not None else self.encode_image(frame)
        mod = temporal_class(cfg.temporal)
        concat = mod.context_tokens and cfg.context_frames > 0
        ids, offsets = self.prompt_ids(query, img.tokens, img.tokens if concat else None)
        n_prompt = len(ids)
        labels = [IGNORE_INDEX] * n_prompt
        if answer is not None:
            text = answer if answer.startswith(" ") else " " + answer
            ans = self.tokenizer.encode(text) + [self.tokenizer.eos_token_id]
            ids += ans
            labels += ans

        def place(offset: int) -> np.ndarray:
            return np.where(img.patch_idx >= 0, img.patch_idx + offset, IGNORE_INDEX)

        out = {
            "input_ids": np.array(ids, dtype=np.int64),
            "labels": np.array(labels, dtype=np.int64),
            "images": img.crops,
            "image_masks": img.image_masks,
            "image_input_idx": place(offsets[-1]),
        }
        if mod.uses_context and cfg.context_frames > 0:
            if frame is not None:
                ctx = self.context_frames(frame, context)
                out["context_images"] = np.stack([self.encode_image(c).crops for c in ctx])
            if concat:
                out["context_input_idx"] = place(offsets[0])
        return out


def collate(examples: Sequence[dict[str, np.ndarray]], pad_token_id: int, padding_side: str = "left"):
    """Pad a list of processor outputs into a batch of tensors.

    Text is padded on `padding_side`: use "left" for generation (the last position of every row
    is then a real token) and either side for training (the loss ignores padding: labels -100,
    attention_mask 0). Crops are padded with -1 crops whose features are never used
    (image_input_idx -100). Image indices are shifted by the left padding.
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not examples:
        raise ConfigError("collate needs at least one example")
    B = len(examples)
    L = max(len(e["input_ids"]) for e in examples)
    n = max(e["images"].shape[0] for e in examples)
    input_ids = torch.full((B, L), pad_token_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    crops_shape = examples[0]["images"].shape[1:]
    images = torch.full((B, n) + crops_shape, -1.0)
    image_masks = torch.full((B, n, examples[0]["image_masks"].shape[1]), -1.0)
    T = examples[0]["image_input_idx"].shape[1]
    image_input_idx = torch.full((B, n, T), IGNORE_INDEX, dtype=torch.long)
    has_ctx = "context_images" in examples[0]
    has_cidx = "context_input_idx" in examples[0]
    if has_ctx:
        l = examples[0]["context_images"].shape[0]
        context_images = torch.full((B, l, n) + crops_shape, -1.0)
    if has_cidx:
        context_input_idx = torch.full((B, n, T), IGNORE_INDEX, dtype=torch.long)
    for b, e in enumerate(examples):
        k = len(e["input_ids"])
        shift = L - k if padding_side == "left" else 0
        input_ids[b, shift:shift + k] = torch.from_numpy(e["input_ids"])
        labels[b, shift:shift + k] = torch.from_numpy(e["labels"])
        attention_mask[b, shift:shift + k] = 1
        c = e["images"].shape[0]
        images[b, :c] = torch.from_numpy(e["images"])
        image_masks[b, :c] = torch.from_numpy(e["image_masks"])
        idx = torch.from_numpy(e["image_input_idx"])
        image_input_idx[b, :c] = torch.where(idx >= 0, idx + shift, idx)
        if has_ctx:
            context_images[b, :, :c] = torch.from_numpy(e["context_images"])
        if has_cidx:
            cidx = torch.from_numpy(e["context_input_idx"])
            context_input_idx[b, :c] = torch.where(cidx >= 0, cidx + shift, cidx)
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "images": images,
        "image_masks": image_masks,
        "image_input_idx": image_input_idx,
    }
    if has_ctx:
        batch["context_images"] = context_images
    if has_cidx:
        batch["context_input_idx"] = context_input_idx
    return batch
