"""The `sam3` mask backend: transformers' `Sam3TrackerVideoModel` behind `MaskPredictor`.

SAM3's tracker is SAM2's video tracker with a SAM3 (ViT) image encoder: the inference session,
the point prompts, the memory bank and the per-frame forward are the same API, so everything but
the model class, the session class and the pixel normalisation is inherited from the `sam2`
backend (streamed frames, bounded memory, forward/reverse propagation, single-image prompts).

Checkpoint folder: `config.json` plus `*.safetensors`, either a tracker alone (`model_type`
"sam3_tracker_video", what `Sam3TrackerVideoModel.save_pretrained` writes) or a whole SAM3 video
model ("sam3_video", the detector + tracker folder that `eval --method sam3-text` uses: transformers
loads its tracker weights and skips the detector's). Preprocessing follows
`Sam3ImageProcessor`'s defaults: resize to S x S, scale to [0, 1], normalise with mean = std = 0.5.
"""

from __future__ import annotations

from typing import Any

from pathlib import Path

from videomolmo.errors import ConfigError
from videomolmo.segmentation.registry import register_backend
from videomolmo.segmentation.sam2 import Sam2Predictor, validate_checkpoint_dir

SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)


class Sam3TrackerPredictor(Sam2Predictor):
    """SAM3 tracker (transformers `Sam3TrackerVideoModel`) as a `MaskPredictor`."""

    name = "sam3"
    label = "SAM3 tracker"
    accepted_model_types = ("sam3_tracker_video", "sam3_video")
    image_mean = SAM3_MEAN
    image_std = SAM3_STD

    @staticmethod
    def _model_class() -> Any:
        from transformers import Sam3TrackerVideoModel

        return Sam3TrackerVideoModel

    @staticmethod
    def _session_class() -> Any:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession,
        )

        return Sam3TrackerVideoInferenceSession


def tiny_sam3_vision_config(image_size: int = 112) -> Any:
    """A two-layer ViT `Sam3VisionConfig` (patch 14, hidden 32, FPN 128) for CPU tests."""
    from transformers.models.sam3.configuration_sam3 import Sam3ViTConfig, Sam3VisionConfig

    s = int(image_size)
    if s % 14 or (s // 14) % 2:
        raise ConfigError(f"tiny SAM3 image size must be a multiple of 28, got {s}")
    g = s // 14
    backbone = Sam3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=s,
        patch_size=14, window_size=g // 2, global_attn_indexes=[1], pretrain_image_size=s,
    )
    return Sam3VisionConfig(backbone_config=backbone, fpn_hidden_size=128,
                            backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]])


def tiny_sam3_tracker_config(image_size: int = 112) -> Any:
    """A ~2M-parameter random-initialisable `Sam3TrackerVideoConfig` for CPU tests.

    Memory channels (64) stay below the hidden size (128) as in the real model: the tracker's
    object-pointer split assumes it.
    """
    from transformers import Sam3TrackerVideoConfig

    s = int(image_size)
    g = s // 14
    return Sam3TrackerVideoConfig(
        vision_config=tiny_sam3_vision_config(s),
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=14),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=256, num_attention_heads=2, iou_head_hidden_dim=64),
        image_size=s, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=256, memory_attention_rope_feat_sizes=[g, g],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=256,
    )


def validate_sam3_tracker_dir(path: str | Path) -> Path:
    return validate_checkpoint_dir(path, Sam3TrackerPredictor.accepted_model_types, Sam3TrackerPredictor.label)


register_backend(
    "sam3",
    lambda checkpoint=None, device="cpu", dtype=None: Sam3TrackerPredictor.from_pretrained(checkpoint, device=device,
                                                                                            dtype=dtype),
    description="SAM3 tracker (transformers Sam3TrackerVideoModel); --mask-checkpoint: a sam3_tracker_video or sam3_video folder",
    needs_checkpoint=True,
    check_checkpoint=validate_sam3_tracker_dir,
)
