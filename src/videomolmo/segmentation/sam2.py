"""The `sam2` mask backend: Hugging Face transformers' `Sam2VideoModel` behind `MaskPredictor`.

Loaded from a local directory in the Hugging Face format (the layout of
`facebook/sam2.1-hiera-large`: `config.json` plus `*.safetensors`). Preprocessing is done here
rather than by `Sam2VideoProcessor`, because that processor imports torchvision and no torchvision
wheel works with the CPU torch this project pins: frames are resized bilinearly to S x S, scaled
to [0, 1] and normalised with the ImageNet mean/std; points are scaled by (S/W, S/H); the
low-resolution mask logits are upsampled bilinearly to the frame size and thresholded at 0.

Frames are streamed into the transformers inference session one at a time and dropped after use,
and per-frame tracking outputs further than the model's memory window from the current frame are
pruned (the library never prunes them), so memory stays flat in video length.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.files import check_safetensors
from videomolmo.hf_local import load_native_model
from videomolmo.segmentation.predictor import MaskPredictor, PredictorState, check_rgb_frame, clean_points

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_ACCEPTED_MODEL_TYPES = ("sam2_video", "sam2")


def validate_checkpoint_dir(
    path: str | Path, accepted: Sequence[str] = _ACCEPTED_MODEL_TYPES, label: str = "SAM2"
) -> Path:
    """Check that `path` is a loadable checkpoint directory of a model type in `accepted`; return it.

    `label` names the model in messages (the SAM3 backends reuse this check).

    Raises `CheckpointError` naming the directory and what is wrong: missing, not a directory,
    no or unreadable `config.json`, a config for another model, no `*.safetensors`, a sharded
    index naming missing shards, or a truncated safetensors file.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: {label} checkpoint directory does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root}: {label} checkpoint must be a directory (config.json + *.safetensors)")
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{root}: no config.json in the {label} checkpoint directory")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in accepted:
        raise CheckpointError(
            f"{config_path}: model_type is {model_type!r}, expected one of {list(accepted)}"
        )
    index_path = root / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index_path}: unreadable shard index ({exc})") from None
        files = [root / s for s in shards]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{root}: shard index names missing weight files {missing}")
    else:
        files = sorted(root.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{root}: no *.safetensors weights in the {label} checkpoint directory")
    for f in files:
        check_safetensors(f)
    return root


def _resolve_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if str(dtype) not in names:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[str(dtype)]


def square_model_input(frame: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
                       device: Any, dtype: Any) -> Any:
    """RGB uint8 (H, W, 3) -> (3, size, size) tensor: bilinear resize, [0, 1], (x - mean) / std.

    The SAM family's processors all do this (only mean/std differ); done here in torch because
    their processors need torchvision."""
    import torch
    import torch.nn.functional as F

    frame = check_rgb_frame(frame)
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].float()
    x = F.interpolate(x / 255.0, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s)[0].to(dtype)


class Sam2Predictor(MaskPredictor):
    """SAM2 (transformers `Sam2VideoModel`) as a `MaskPredictor`.

    One `PredictorState` holds one transformers inference session; objects are the SAM2 object
    ids. `predict_image` runs the same model on a single frame without memory, caching the last
    frame's image features so that many candidate prompts on one frame (the annotation pipeline)
    cost one image-encoder pass.
    """

    name = "sam2"
    #: Subclasses for other SAM-style trackers (the `sam3` backend) override these five.
    label = "SAM2"
    accepted_model_types: tuple[str, ...] = _ACCEPTED_MODEL_TYPES
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD

    @staticmethod
    def _model_class() -> Any:
        from transformers import Sam2VideoModel

        return Sam2VideoModel

    @staticmethod
    def _session_class() -> Any:
        from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

        return Sam2VideoInferenceSession

    def __init__(self, model: Any, device: str = "cpu", dtype: Any = None):
        import torch

        self.model = model.eval()
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        self.model.to(device=self.device, dtype=self.dtype)
        self.image_size = int(model.config.image_size)
        # A stored non-conditioning output is read back as memory (num_maskmem - 1 frames) and as
        # an object pointer (max_object_pointers_in_encoder - 1 frames); nothing older is used.
        self.memory_window = max(int(model.config.num_maskmem), int(model.config.max_object_pointers_in_encoder))
        self._image_cache: tuple[str, Any] | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: Any = None) -> "Sam2Predictor":
        """Load a checkpoint directory (HF format) after checking it is complete."""
        root = validate_checkpoint_dir(path, cls.accepted_model_types, cls.label)

        torch_dtype = _resolve_dtype(dtype)
        model = load_native_model(cls._model_class(), root, cls.label, torch_dtype)
        return cls(model, device=device, dtype=torch_dtype)

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, frame: np.ndarray) -> Any:
        """RGB uint8 (H, W, 3) -> normalised float (3, S, S) tensor on the model's device."""
        return square_model_input(frame, self.image_size, self.image_mean, self.image_std, self.device, self.dtype)

    def _point_inputs(self, pts: np.ndarray, labels: np.ndarray, width: int, height: int) -> dict:
        import torch

        scaled = pts * np.array([self.image_size / width, self.image_size / height])
        return {
            "point_coords": torch.tensor(scaled, dtype=torch.float32, device=self.device).view(1, 1, -1, 2),
            "point_labels": torch.tensor(labels, dtype=torch.int32, device=self.device).view(1, 1, -1),
        }

    def _to_masks(self, pred_masks: Any, height: int, width: int) -> np.ndarray:
        """(N, 1, h, w) low-res logits -> (N, H, W) bool at the frame's size."""
        import torch.nn.functional as F

        up = F.interpolate(pred_masks.float(), size=(height, width), mode="bilinear", align_corners=False)
        return (up[:, 0] > 0).cpu().numpy()

    # ------------------------------------------------------------------ video API
    def _new_session(self, height: int, width: int) -> Any:
        return self._session_class()(
            video_height=height,
            video_width=width,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )

    def _open(self, state: PredictorState) -> None:
        state.extra["session"] = self._new_session(*state.extra["size"])

    def _step(self, state: PredictorState, frame_idx: int, reverse: bool) -> dict[int, tuple[np.ndarray, float]]:
        """Run the model on one streamed frame; return {obj_id: (mask, object score)}; prune
        what is no longer needed."""
        import torch

        session = state.extra["session"]
        # Only the frame being processed is kept; its image features live in the session cache.
        session.processed_frames = {}
        with torch.inference_mode():
            out = self.model(session, frame_idx=frame_idx, frame=self.preprocess(self.frame(state, frame_idx)),
                             reverse=reverse)
        height, width = state.extra["size"]
        masks = self._to_masks(out.pred_masks, height, width)
        # SAM2's object score: how sure the model is that the object is in this frame at all.
        logits = getattr(out, "object_score_logits", None)
        scores = (torch.sigmoid(logits.float()).reshape(-1).cpu().numpy() if logits is not None
                  else np.ones(len(out.object_ids)))
        self._prune(session, frame_idx)
        return {int(obj_id): (masks[i], float(scores[i]) if i < len(scores) else 1.0)
                for i, obj_id in enumerate(out.object_ids)}

    def _prune(self, session: Any, frame_idx: int) -> None:
        window = self.memory_window
        session.processed_frames = {}
        for obj_idx, outputs in session.output_dict_per_obj.items():
            non_cond = outputs["non_cond_frame_outputs"]
            for t in [t for t in non_cond if abs(t - frame_idx) > window]:
                del non_cond[t]
            tracked = session.frames_tracked_per_obj[obj_idx]
            for t in [t for t in tracked if abs(t - frame_idx) > window]:
                del tracked[t]

    def _mask_from_prompt(self, state, frame_idx, obj_id, points, labels):
        """The session's inputs for this frame and object become all the clicks so far."""
        height, width = state.extra["size"]
        session = state.extra["session"]
        obj_idx = session.obj_id_to_idx(obj_id)
        # A prompted frame is a conditioning frame even if it was tracked before: drop its tracked
        # output, or transformers would store the new prediction as non-conditioning and the
        # prompt would be pruned away with the memory window.
        session.frames_tracked_per_obj[obj_idx].pop(frame_idx, None)
        session.output_dict_per_obj[obj_idx]["non_cond_frame_outputs"].pop(frame_idx, None)
        session.output_dict_per_obj[obj_idx]["cond_frame_outputs"].pop(frame_idx, None)
        session.add_point_inputs(obj_idx, frame_idx, self._point_inputs(points, labels, width, height))
        session.remove_mask_inputs(obj_idx, frame_idx)
        session.obj_with_new_inputs = [obj_id]
        return self._step(state, frame_idx, reverse=False)[obj_id]

    def _track_step(self, state, frame_idx, reverse):
        """Track every prompted object onto `frame_idx`; with no prompt yet, no object."""
        if state.extra["session"].get_obj_num() == 0:
            return {}
        return self._step(state, frame_idx, reverse=reverse)

    # ------------------------------------------------------------------ single image
    def _image_session(self, frame: np.ndarray) -> Any:
        """A one-frame session with the frame's image features cached (reused for the same frame)."""
        key = hashlib.blake2b(frame.tobytes(), digest_size=16).hexdigest() + str(frame.shape)
        if self._image_cache is not None and self._image_cache[0] == key:
            session = self._image_cache[1]
            session.reset_tracking_data()
            return session
        session = self._new_session(*frame.shape[:2])
        session.add_new_frame(self.preprocess(frame), 0)
        self._image_cache = (key, session)
        return session

    def predict_image(
        self, frame: np.ndarray, points: np.ndarray, labels: np.ndarray | None = None
    ) -> np.ndarray:
        """Single-frame point-to-mask with no memory (SAM2's image path through the video model)."""
        import torch

        frame = check_rgb_frame(frame)
        height, width = frame.shape[:2]
        pts, lab = clean_points(points, labels, (width, height), where=f"{self.name} backend: ")
        if len(pts) == 0:
            return np.zeros((height, width), dtype=bool)
        session = self._image_session(frame)
        obj_idx = session.obj_id_to_idx(0)
        session.add_point_inputs(obj_idx, 0, self._point_inputs(pts, lab, width, height))
        session.obj_with_new_inputs = [0]
        with torch.inference_mode():
            out = self.model(session, frame_idx=0, run_mem_encoder=False)
        return self._to_masks(out.pred_masks, height, width)[0]


def stored_frame_counts(state: PredictorState) -> dict[str, int]:
    """How many per-frame items a SAM2 state holds (for checking memory stays flat)."""
    session = state.extra["session"]
    return {
        "frames": len(session.processed_frames or {}),
        "non_cond_outputs": sum(len(o["non_cond_frame_outputs"]) for o in session.output_dict_per_obj.values()),
        "cond_outputs": sum(len(o["cond_frame_outputs"]) for o in session.output_dict_per_obj.values()),
        "tracked": sum(len(t) for t in session.frames_tracked_per_obj.values()),
        "image_features": len(session.cache._vision_features),
        "masks": sum(len(m) for m in state.masks.values()),
    }


def tiny_sam2_config(image_size: int = 128) -> Any:
    """A few-MB random-initialisable `Sam2VideoConfig` for CPU tests and timing the plumbing.

    Hiera blocks [1, 1, 2, 1], dims [12, 24, 48, 96], hidden size 128. Its masks are meaningless
    without trained weights; it exercises every code path of the real model at 1/1000 the cost.
    """
    from transformers import Sam2VideoConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    s = int(image_size)
    if s % 32:
        raise ConfigError(f"tiny SAM2 image size must be a multiple of 32, got {s}")
    backbone = Sam2HieraDetConfig(
        hidden_size=12, blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[12, 24, 48, 96],
        num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
        global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4], image_size=[s, s],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[96, 48, 24, 12],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]], fpn_hidden_size=128,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=256, num_attention_heads=2, iou_head_hidden_dim=64),
        image_size=s, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=256, memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=256,
    )


# Imported here, after `Sam2Predictor` exists: importing the registry imports every backend,
# and the sam3 backend subclasses this one.
from videomolmo.segmentation.registry import register_backend  # noqa: E402

register_backend(
    "sam2",
    lambda checkpoint=None, device="cpu", dtype=None: Sam2Predictor.from_pretrained(checkpoint, device=device,
                                                                                     dtype=dtype),
    description="SAM2 video predictor (transformers Sam2VideoModel); --mask-checkpoint: an HF-format SAM2 folder",
    needs_checkpoint=True,
    check_checkpoint=validate_checkpoint_dir,
)
