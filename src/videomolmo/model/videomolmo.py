"""The VideoMolmo model: CLIP ViT -> temporal module -> connector -> Qwen2 decoder.

Pooled, projected image features are ADDED to the input embeddings of the `<im_patch>` tokens
(Molmo's scheme; the image special tokens have their own embedding rows, `new_embedding`, after
the LM vocabulary). The decoder is a stock `transformers.Qwen2ForCausalLM`, always driven through
`inputs_embeds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from videomolmo.errors import ConfigError
from videomolmo.model.config import ModelConfig
from videomolmo.model.connector import AttentionPool, Projector
from videomolmo.model.point_head import PatchHead, resolve_layer
from videomolmo.model.preprocess import IGNORE_INDEX
from videomolmo.model.temporal import build_temporal, from_windows, to_windows
from videomolmo.model.vision import VisionEncoder


@dataclass
class VideoMolmoOutput:
    """`loss` (answer tokens only; None without labels), `logits` (B, L', V), `cache` (KV),
    `hidden` (B, L, D): the output of decoder layer `hidden_layer` when asked for."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    cache: Any = None
    hidden: torch.Tensor | None = None


def _qwen2_config(cfg: ModelConfig):
    from transformers import Qwen2Config

    c = cfg.llm
    q = Qwen2Config(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden,
        intermediate_size=c.intermediate,
        num_hidden_layers=c.layers,
        num_attention_heads=c.heads,
        num_key_value_heads=c.kv_heads,
        rms_norm_eps=c.rms_eps,
        max_position_embeddings=c.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=False,
        use_sliding_window=False,
        attention_dropout=0.0,
    )
    q._attn_implementation = "sdpa"
    return q


class VideoMolmo(nn.Module):
    """VideoMolmo for training (`forward` with labels) and greedy pointing (`generate`).

    Parameter layout (names are what `save_pretrained` writes):
    `vision.clip.*` (CLIPVisionModel), `pad_embed` (2, C), `temporal.*`, `pool.*`,
    `projector.*`, `new_embedding` (additional vocab, hidden), `llm.*` (Qwen2ForCausalLM),
    `point_head.*` (only with `point_head="patch"`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from transformers import Qwen2ForCausalLM

        self.config = config
        v = config.vision
        C = v.feature_dim
        self.vision = VisionEncoder(v)
        if config.image_padding_embed == "pad_and_partial_pad":
            self.pad_embed = nn.Parameter(torch.zeros(2, C))
        else:
            self.register_parameter("pad_embed", None)
        self.temporal = build_temporal(config)
        if config.pool == "attention_meanq":
            self.pool = AttentionPool(C, config.pool_heads, config.pool_head_dim, config.pool_dim)
        else:
            self.pool = None
        self.projector = Projector(config.pooled_dim, config.projector_hidden, config.llm.hidden,
                                   config.projector_norm)
        self.llm = Qwen2ForCausalLM(_qwen2_config(config))
        self.new_embedding = nn.Parameter(torch.empty(config.llm.additional_vocab_size, config.llm.hidden))
        if not self.new_embedding.is_meta:
            nn.init.normal_(self.new_embedding, std=0.02)
        # Patch-selection pointing (`point_head.py`); None for text pointing.
        self.point_head = PatchHead(config.llm.hidden) if config.point_head == "patch" else None
        # Counters for benchmarks and tests: frames and crops through the ViT.
        self.vision_frames = 0
        self.vision_crops = 0

    # -- pieces ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.new_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.new_embedding.dtype

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings; ids >= vocab_size read Molmo's additional rows (image tokens)."""
        V = self.config.llm.vocab_size
        base = input_ids < V
        emb = self.llm.get_input_embeddings()(input_ids.clamp(0, V - 1))
        if not bool(base.all()):
            extra = F.embedding((input_ids - V).clamp(0, self.new_embedding.shape[0] - 1), self.new_embedding)
            emb = torch.where(base[..., None], emb, extra.to(emb.dtype))
        return emb

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_crops, 3, S, S) crops -> (B, n_crops, patches, C) ViT features."""
        B, n = images.shape[:2]
        self.vision_frames += B
        self.vision_crops += B * n
        f = self.vision(images.reshape((B * n,) + images.shape[2:]).to(self.device))
        return f.reshape(B, n, f.shape[1], f.shape[2])

    def encode_context(self, context_images: torch.Tensor) -> torch.Tensor:
        """(B, l, n, 3, S, S) previous frames -> (B, n, patches, C) mean feature (no gradient,
        as upstream)."""
        B, l = context_images.shape[:2]
        with torch.no_grad():
            f = self.encode_frames(context_images.reshape((B * l,) + context_images.shape[2:]))
        return f.reshape((B, l) + f.shape[1:]).mean(1)

    def image_features(self, frame_feats: torch.Tensor, image_masks: torch.Tensor,
                       context_feats: torch.Tensor | None = None, use_temporal: bool = True):
        """ViT features -> LLM-width features per crop: (B, n, tokens_per_crop, hidden).

        Returns `(features, context_features)`; the second only for token-space variants (`concat`).
        `use_temporal=False` runs without the temporal module (single-frame ablation).
        """
        cfg = self.config
        B, n, N, C = frame_feats.shape
        G = cfg.vision.grid
        x, ctx = frame_feats, (context_feats if use_temporal else None)
        if self.pad_embed is not None:
            masks = image_masks.to(x.device)
            all_pad = (masks == 0).to(x.dtype)[..., None]
            partial = ((masks < 1) & (masks != 0)).to(x.dtype)[..., None]
            pe = self.pad_embed.to(x.dtype)
            x = x + pe[0] * all_pad
            x = x + pe[1] * partial
            if ctx is not None:
                ctx = ctx + pe[0] * all_pad
                ctx = ctx + pe[1] * partial
        mod = self.temporal
        fuse = mod.uses_context and not mod.context_tokens and ctx is not None
        if use_temporal and mod.uses_context and ctx is None and cfg.context_frames > 0:
            raise ConfigError(
                f"model {cfg.name!r} has a temporal module: pass context_images or context features"
            )
        ctx_out = None
        if self.pool is not None:
            xw = to_windows(x.reshape(B, n, G, G, C))
            if fuse:
                xw = self.temporal(xw, to_windows(ctx.reshape(B, n, G, G, C)))
            pooled = self.pool(xw).reshape(B, n, -1, cfg.pool_dim)
            if mod.context_tokens and ctx is not None:
                ctx_out = self.pool(to_windows(ctx.reshape(B, n, G, G, C))).reshape(B, n, -1, cfg.pool_dim)
        else:
            pooled = x
            if fuse:
                xw = self.temporal(to_windows(x.reshape(B, n, G, G, C)), to_windows(ctx.reshape(B, n, G, G, C)))
                pooled = from_windows(xw, B, n, G).reshape(B, n, G * G, C)
            if mod.context_tokens and ctx is not None:
                ctx_out = ctx
        feats = self.projector(pooled)
        return feats, (self.projector(ctx_out) if ctx_out is not None else None)

    @staticmethod
    def _scatter_add(embeds: torch.Tensor, feats: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        B, D = embeds.shape[0], embeds.shape[-1]
        f = feats.reshape(B, -1, D)
        i = idx.reshape(B, -1).to(embeds.device)
        valid = i >= 0
        b = torch.arange(B, device=embeds.device)[:, None].expand_as(i)
        return embeds.index_put((b[valid], i[valid]), f[valid].to(embeds.dtype), accumulate=True)

    def build_inputs_embeds(self, input_ids, images=None, image_masks=None, image_input_idx=None,
                            context_images=None, context_input_idx=None, frame_features=None,
                            context_features=None, use_temporal: bool = True) -> torch.Tensor:
        """Input embeddings with image features added at the `<im_patch>` positions.

        Pass either raw crops (`images`, `context_images`) or precomputed ViT features
        (`frame_features` (B, n, N, C), `context_features` = mean over the context frames).
        """
        embeds = self.embed_tokens(input_ids)
        if images is None and frame_features is None:
            return embeds
        if image_input_idx is None or image_masks is None:
            raise ConfigError("image inputs need image_masks and image_input_idx")
        if frame_features is None:
            frame_features = self.encode_frames(images)
        if not use_temporal:
            context_features = context_images = None
        if context_features is None and context_images is not None:
            context_features = self.encode_context(context_images)
        feats, ctx_feats = self.image_features(frame_features, image_masks, context_features, use_temporal)
        embeds = self._scatter_add(embeds, feats, image_input_idx)
        if ctx_feats is not None:
            if context_input_idx is None:
                raise ConfigError(f"temporal={self.config.temporal!r} needs context_input_idx from the processor")
            embeds = self._scatter_add(embeds, ctx_feats, context_input_idx)
        return embeds

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, image_masks: torch.Tensor | None = None,
                image_input_idx: torch.Tensor | None = None, context_images: torch.Tensor | None = None,
                context_input_idx: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                frame_features: torch.Tensor | None = None, context_features: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Any = None, use_cache: bool = False,
                logits_to_keep: int = 0, hidden_layer: int | None = None) -> VideoMolmoOutput:
        """Logits and, with `labels`, the mean cross-entropy over labelled tokens.

        `labels` are aligned with `input_ids` (HF convention; shifted here): -100 everywhere
        except the answer tokens. Positions come from the attention mask (cumsum - 1), so left
        and right padding give the same result.
        """
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        embeds = self.build_inputs_embeds(input_ids, images, image_masks, image_input_idx, context_images,
                                          context_input_idx, frame_features, context_features)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                       cache=cache, use_cache=use_cache, logits_to_keep=logits_to_keep,
                       output_hidden_states=hidden_layer is not None)
        logits = out.logits
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:]
            if bool((shift_labels != IGNORE_INDEX).any()):
                loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                       ignore_index=IGNORE_INDEX)
            else:
                loss = shift_logits.sum() * 0.0
        hidden = out.hidden_states[hidden_layer] if hidden_layer is not None else None
        return VideoMolmoOutput(loss=loss, logits=logits, cache=out.cache if use_cache else None, hidden=hidden)

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int | None = None,
                 eos_token_id: int | None = None, use_kv_cache: bool = True,
                 frame_features: torch.Tensor | None = None,
                 context_features: torch.Tensor | None = None, use_temporal: bool = True,
                 return_probs: bool = False, return_coverage: bool = False):
        """Greedy decoding from `inputs_embeds` with a KV cache; returns new token ids per row
        (EOS excluded). The batch must be left-padded (`collate(..., padding_side="left")`).
        `return_probs=True` returns `(ids, probs)`: per row, also the softmax probability of each
        chosen token (the model's confidence in it). `return_coverage=True` (a model with
        `point_head="patch"`) appends the head's (B, n, T) patch coverage, read from the prompt's
        forward pass, so selection costs no extra decoder pass.
        """
        if return_coverage and self.point_head is None:
            raise ConfigError(f"model {self.config.name!r} has no patch pointing head")
        max_new = max_new_tokens if max_new_tokens is not None else self.config.max_new_tokens
        ids = batch["input_ids"].to(self.device)
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask.to(self.device)
        if not bool(mask[:, -1].all()):
            raise ConfigError("generate needs a left-padded batch (collate(..., padding_side='left'))")
        B = ids.shape[0]
        embeds = self.build_inputs_embeds(
            ids, batch.get("images"), batch.get("image_masks"), batch.get("image_input_idx"),
            batch.get("context_images"), batch.get("context_input_idx"), frame_features, context_features,
            use_temporal)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out_tokens = torch.zeros((B, 0), dtype=torch.long, device=self.device)
        out_probs = torch.zeros((B, 0), dtype=torch.float32, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        cache = None
        coverage = None
        step_embeds, step_pos = embeds, positions
        for step in range(max_new):
            want_hidden = return_coverage and step == 0
            if use_kv_cache:
                out = self.llm(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_pos,
                               cache=cache, use_cache=True, logits_to_keep=1, output_hidden_states=want_hidden)
                cache = out.cache
            else:
                out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                               use_cache=False, logits_to_keep=1, output_hidden_states=want_hidden)
            if want_hidden:
                layer = resolve_layer(self.config.point_head_layer, self.config.llm.layers)
                coverage = self.point_head.coverage(out.hidden_states[layer], batch["image_input_idx"])
            step_logits = out.logits[:, -1].float()
            nxt = step_logits.argmax(-1)
            if return_probs:
                out_probs = torch.cat([out_probs, step_logits.softmax(-1).gather(1, nxt[:, None])], 1)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done = done | (nxt == eos_token_id)
            out_tokens = torch.cat([out_tokens, nxt[:, None]], 1)
            if bool(done.all()):
                break
            new_embed = self.embed_tokens(nxt[:, None])
            new_pos = positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            positions = torch.cat([positions, new_pos], 1)
            embeds = torch.cat([embeds, new_embed], 1)
            step_embeds, step_pos = new_embed, new_pos
        result = []
        for row in out_tokens.tolist():
            if eos_token_id is not None and eos_token_id in row:
                row = row[: row.index(eos_token_id)]
            result.append(row)
        extra = []
        if return_probs:
            extra.append([p[: len(r)] for p, r in zip(out_probs.tolist(), result)])
        if return_coverage:
            extra.append(coverage)
        return (result, *extra) if extra else result

    # -- bookkeeping ------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (works on the meta device)."""
        groups = {
            "vision (CLIP ViT)": [self.vision],
            "temporal module": [self.temporal],
            "connector (pool + projector + pad)": [m for m in (self.pool, self.projector) if m is not None],
            "LLM (Qwen2 + image token rows)": [self.llm],
        }
        counts = {k: sum(p.numel() for m in ms for p in m.parameters()) for k, ms in groups.items()}
        if self.pad_embed is not None:
            counts["connector (pool + projector + pad)"] += self.pad_embed.numel()
        counts["LLM (Qwen2 + image token rows)"] += self.new_embedding.numel()
        if self.point_head is not None:
            counts["point head"] = sum(p.numel() for p in self.point_head.parameters())
        counts["total"] = sum(counts.values())
        return counts
