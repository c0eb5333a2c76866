"""Model configuration: one dataclass with named presets.

`ModelConfig.from_name("molmo-7b-d")` is the VideoMolmo-7B layout (Molmo-7B-D-0924 plus the
temporal module); `"tiny"` is the small CPU model we train and bundle; `"test-tiny"` exists so that
unit tests run in milliseconds while still exercising Molmo's multi-crop path.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any

from videomolmo.errors import ConfigError
from videomolmo.model.point_head import POINT_HEADS, resolve_layer
from videomolmo.model.temporal import temporal_class

CROP_MODES = ("overlap-and-resize-c2", "resize")
POOL_MODES = ("attention_meanq", "none")
PROMPT_ORDERS = ("image_first", "query_first")
PADDING_EMBEDS = ("pad_and_partial_pad", "none")
TOKENIZERS = ("bytes", "hf")
TEMPORAL_INITS = ("xavier", "zero")


@dataclass
class VisionConfig:
    """CLIP ViT settings (Molmo's ViT is CLIP ViT-L/14-336 with the last layer dropped)."""

    image_size: int = 336  # base crop size in pixels
    patch_size: int = 14
    width: int = 1024
    layers: int = 23
    heads: int = 16
    mlp_dim: int = 4096
    act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # Indices into the list of per-block outputs (Molmo's `vit_layers`); features are concatenated.
    feature_layers: tuple[int, ...] = (-2, -9)

    @property
    def grid(self) -> int:
        """Patches per side of one crop."""
        return self.image_size // self.patch_size

    @property
    def feature_dim(self) -> int:
        return self.width * len(self.feature_layers)


@dataclass
class LLMConfig:
    """Qwen2 decoder settings."""

    vocab_size: int = 152064  # rows of the LM head and of the base embedding table
    additional_vocab_size: int = 128  # Molmo's `wte.new_embedding` rows (image special tokens)
    hidden: int = 3584
    layers: int = 28
    heads: int = 28
    kv_heads: int = 4
    intermediate: int = 18944
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    max_position_embeddings: int = 32768


@dataclass
class ModelConfig:
    """Everything that decides the weights' shapes and the input layout.

    Fields beyond Molmo's own (`crop_mode`, `pool`, `projector_norm`, `prompt_order`,
    `temporal`, `temporal_init`) are the choices the small CPU model needs; the molmo-7b-d
    preset sets them to what the released checkpoints were trained with.
    """

    name: str = "custom"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    # Image preprocessing.
    crop_mode: str = "overlap-and-resize-c2"  # Molmo multi-crop; "resize" = one crop only
    max_crops: int = 12
    overlap_margins: tuple[int, int] = (4, 4)
    # Molmo appends the padding-mask row of the global crop at the end although the global
    # crop comes first in the crops, so every crop sees its neighbour's mask. The released
    # checkpoints were trained that way ("fix_image_padding=False"); keep it for them.
    padding_mask_quirk: bool = True
    image_padding_embed: str = "pad_and_partial_pad"
    # Connector.
    pool: str = "attention_meanq"  # 2x2 attention pooling with the window mean as query
    pool_heads: int = 16
    pool_head_dim: int = 64
    pool_dim: int = 1024  # width after pooling (= ViT width in Molmo)
    projector_hidden: int = 18944  # SwiGLU hidden width (Molmo: mlp_hidden_size // 2)
    projector_norm: bool = False  # LayerNorm before the projector
    # Temporal module.
    temporal: str = "cross_attention"  # a name in videomolmo.model.temporal.TEMPORAL_MODULES
    context_frames: int = 4
    temporal_heads: int = 16
    temporal_head_dim: int = 64
    # "xavier": the variant's from-scratch init; "zero": the identity at init, for variants that
    # support it (`supports_identity_init`), ignored by the others.
    temporal_init: str = "xavier"
    # Text.
    prompt_order: str = "image_first"  # "query_first": query text before the image tokens
    tokenizer: str = "hf"  # "bytes": byte-level tokenizer that needs no files
    point_decimals: int = 1  # decimals of the percent coordinates in point text
    # How points are read out (`point_head.py`): "text" = the coordinate digits (Molmo);
    # "patch" = a head on decoder layer `point_head_layer` (0 = the middle one) selects the
    # patches that hold the object and the point is decoded from that selection.
    point_head: str = "text"
    point_head_layer: int = 0
    max_new_tokens: int = 256
    # Size of the synthetic clips the model trains and is scored on (None: the ViT's input
    # size). A model whose ViT sees a finer patch grid over the same clips (each frame
    # upsampled to `vision.image_size`) keeps the clip size, so its synthetic val and test
    # splits are the very clips the other models are scored on.
    synth_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            v = dict(self.vision)
            if "feature_layers" in v:
                v["feature_layers"] = tuple(v["feature_layers"])
            self.vision = VisionConfig(**v)
        if isinstance(self.llm, dict):
            self.llm = LLMConfig(**self.llm)
        self.overlap_margins = tuple(self.overlap_margins)  # type: ignore[assignment]
        self.validate()

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `ConfigError` naming the first field whose value is outside its allowed set."""
        temporal_class(self.temporal)
        choices = {
            "crop_mode": CROP_MODES,
            "pool": POOL_MODES,
            "prompt_order": PROMPT_ORDERS,
            "image_padding_embed": PADDING_EMBEDS,
            "tokenizer": TOKENIZERS,
            "temporal_init": TEMPORAL_INITS,
            "point_head": POINT_HEADS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"model config {self.name!r}: {key}={getattr(self, key)!r} is not one of {allowed}"
                )
        v = self.vision
        if v.image_size % v.patch_size:
            raise ConfigError(
                f"model config {self.name!r}: image_size {v.image_size} is not a multiple of patch_size {v.patch_size}"
            )
        for layer in v.feature_layers:
            if not -v.layers <= layer < v.layers:
                raise ConfigError(
                    f"model config {self.name!r}: feature layer {layer} outside a {v.layers}-layer ViT"
                )
        if self.synth_size is not None and not (isinstance(self.synth_size, int) and self.synth_size >= 32):
            raise ConfigError(f"model config {self.name!r}: synth_size must be an integer >= 32, got {self.synth_size!r}")
        if self.context_frames < 0:
            raise ConfigError(f"model config {self.name!r}: context_frames must be >= 0")
        if self.llm.hidden % self.llm.heads or self.llm.heads % self.llm.kv_heads:
            raise ConfigError(f"model config {self.name!r}: LLM heads do not divide the width")
        if self.point_head == "patch":
            if self.crop_mode != "resize" or self.pool != "none":
                raise ConfigError(f"model config {self.name!r}: point_head='patch' needs one token per patch "
                                  f"(crop_mode='resize', pool='none'), got {self.crop_mode!r} / {self.pool!r}")
            resolve_layer(self.point_head_layer, self.llm.layers)
        if self.crop_mode == "overlap-and-resize-c2":
            lm, rm = self.overlap_margins
            if lm % 2 or rm % 2 or v.grid - lm - rm <= 0:
                raise ConfigError(
                    f"model config {self.name!r}: overlap_margins {self.overlap_margins} do not fit a {v.grid}-patch crop"
                )

    # -- derived sizes ------------------------------------------------------------------------
    @property
    def clip_size(self) -> int:
        """Pixel size of the synthetic clips this model trains and is scored on."""
        return self.synth_size or self.vision.image_size

    @property
    def tokens_grid(self) -> int:
        """LLM image tokens per side of one crop (after pooling)."""
        g = self.vision.grid
        return (g + 1) // 2 if self.pool != "none" else g

    @property
    def tokens_per_crop(self) -> int:
        return self.tokens_grid**2

    @property
    def pooled_dim(self) -> int:
        return self.pool_dim if self.pool != "none" else self.vision.feature_dim

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model config has unknown fields: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset, with optional field overrides (`temporal="none"`, ...)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
        cfg = PRESETS[name]()
        return replace(cfg, **overrides) if overrides else cfg

    def replace(self, **changes: Any) -> "ModelConfig":
        return replace(self, **changes)


def _molmo_7b_d() -> ModelConfig:
    return ModelConfig(name="molmo-7b-d")


def _videomolmo_7b() -> ModelConfig:
    # Upstream VideoMolmo's HF model class builds its backbone with image_padding_embed=None,
    # so its released checkpoint carries no pad embeddings.
    return ModelConfig(name="videomolmo-7b", image_padding_embed="none")


def _tiny() -> ModelConfig:
    # The bundled CPU model: the choices that made issue 5's probe 2 ground queries.
    return ModelConfig(
        name="tiny",
        vision=VisionConfig(image_size=112, patch_size=14, width=160, layers=4, heads=4, mlp_dim=640,
                            feature_layers=(-1, -3)),
        llm=LLMConfig(vocab_size=264, additional_vocab_size=8, hidden=192, layers=4, heads=6,
                      kv_heads=2, intermediate=768, rope_theta=10_000.0, max_position_embeddings=1024),
        crop_mode="resize",
        max_crops=1,
        padding_mask_quirk=False,
        pool="none",
        pool_heads=4,
        pool_head_dim=32,
        pool_dim=160,
        projector_hidden=384,
        projector_norm=True,
        temporal="cross_attention",
        temporal_heads=4,
        temporal_head_dim=32,
        temporal_init="zero",
        prompt_order="query_first",
        tokenizer="bytes",
        point_decimals=0,
        max_new_tokens=96,
    )


def _test_tiny() -> ModelConfig:
    # Molmo's multi-crop path at toy sizes: 56-px crops, 4x4 patches, 2x2 pooled tokens.
    return ModelConfig(
        name="test-tiny",
        vision=VisionConfig(image_size=56, patch_size=14, width=32, layers=3, heads=2, mlp_dim=64,
                            feature_layers=(-1, -2)),
        llm=LLMConfig(vocab_size=264, additional_vocab_size=8, hidden=32, layers=2, heads=4,
                      kv_heads=2, intermediate=64, rope_theta=10_000.0, max_position_embeddings=2048),
        max_crops=4,
        overlap_margins=(0, 2),
        pool_heads=2,
        pool_head_dim=16,
        pool_dim=32,
        projector_hidden=48,
        temporal_heads=2,
        temporal_head_dim=16,
        tokenizer="bytes",
        max_new_tokens=24,
    )


PRESETS = {
    "molmo-7b-d": _molmo_7b_d,
    "videomolmo-7b": _videomolmo_7b,
    "tiny": _tiny,
    "test-tiny": _test_tiny,
}
