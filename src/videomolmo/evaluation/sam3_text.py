"""`eval --method sam3-text`: SAM3 alone, the query as its text prompt, no pointer, no fusion.

transformers' `Sam3VideoModel` detects every instance of a text concept on each streamed frame
and tracks them; the referred mask of a frame is the union of the objects it reports. To be
scored by the same `Evaluator` as every other method, `Sam3TextPipeline` answers the same
calls as `Pipeline` (`pipe(video, query, ...)` and `pipe.point(...)`): its points are one
interior point per reported object on the anchor frames (every k-th), its count is the most
objects on one anchor frame (the project's counting rule), its masks are the per-frame unions.

Checkpoint folder: `config.json` with `model_type` "sam3_video" (detector + tracker configs),
`*.safetensors`, and the text tokenizer files (`tokenizer.json` / `tokenizer_config.json`,
CLIP's for the released model). Frames are preprocessed here (resize to S x S, mean = std = 0.5,
as `Sam3VideoProcessor`), because the processor needs torchvision.

Memory: one pass over the video; frames are dropped from the session after use, and the
masks are kept bit-packed (1 bit per pixel) between the pass and the caller's streaming, so
points and count are known before the first mask is consumed. transformers' tracker state
itself (per-object outputs) grows with video length; it is not pruned here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from videomolmo.errors import CheckpointError
from videomolmo.hf_local import byte_level_tokenizer, load_local_tokenizer, load_native_model
from videomolmo.pipeline import PipelineResult
from videomolmo.pointers import ProgressFn
from videomolmo.pointers.oracle import interior_points
from videomolmo.segmentation.sam2 import _resolve_dtype, square_model_input, validate_checkpoint_dir
from videomolmo.segmentation.sam3 import SAM3_MEAN, SAM3_STD, tiny_sam3_tracker_config, tiny_sam3_vision_config
from videomolmo.settings import PipelineConfig, anchor_frames, check_query
from videomolmo.video import open_video

TEXT_MAX_LENGTH = 32  # Sam3VideoProcessor pads every text prompt to 32 tokens


def validate_sam3_video_dir(path: str | Path) -> Path:
    """A complete `Sam3VideoModel` folder (config, weights, text tokenizer), or `CheckpointError`."""
    root = validate_checkpoint_dir(path, ("sam3_video",), "SAM3 video")
    if not (root / "tokenizer.json").is_file() and not (root / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{root}: no tokenizer.json / tokenizer_config.json in the SAM3 video checkpoint "
                              "directory (SAM3's text tokenizer)")
    return root


class Sam3TextSegmenter:
    """`Sam3VideoModel` + its text tokenizer: (video, text) -> per-frame {object id: mask}."""

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu", dtype: Any = None):
        import torch

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        self.model.to(device=self.device, dtype=self.dtype)
        self.image_size = int(model.config.detector_config.vision_config.backbone_config.image_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: Any = None) -> "Sam3TextSegmenter":
        from transformers import Sam3VideoModel

        root = validate_sam3_video_dir(path)
        tokenizer = load_local_tokenizer(root, "SAM3 video")
        torch_dtype = _resolve_dtype(dtype)
        model = load_native_model(Sam3VideoModel, root, "SAM3 video", torch_dtype)
        return cls(model, tokenizer, device=device, dtype=torch_dtype)

    def segment(self, video: Any, query: str, last_frame: int | None = None
                ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        """Stream `(frame index, {object id: bool (H, W) mask})` from frame 0 to `last_frame`."""
        import torch
        import torch.nn.functional as F
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        h, w = int(video.height), int(video.width)
        session = Sam3VideoInferenceSession(video_height=h, video_width=w, inference_device=self.device,
                                            inference_state_device=self.device, video_storage_device=self.device,
                                            dtype=self.dtype)
        prompt_id = session.add_prompt(query)
        enc = self.tokenizer(query, return_tensors="pt", padding="max_length", truncation=True,
                             max_length=TEXT_MAX_LENGTH)
        session.prompt_input_ids[prompt_id] = enc["input_ids"].to(self.device)
        session.prompt_attention_masks[prompt_id] = enc["attention_mask"].to(self.device)
        end = len(video) - 1 if last_frame is None else int(last_frame)
        for i in range(end + 1):
            x = square_model_input(video[i], self.image_size, SAM3_MEAN, SAM3_STD, self.device, self.dtype)
            with torch.inference_mode():
                out = self.model(session, frame_idx=i, frame=x)
            # Streaming: the detector and tracker read only the current frame's pixels.
            session.processed_frames = {}
            hidden = set(out.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
            masks: dict[int, np.ndarray] = {}
            for obj_id, low in sorted(out.obj_id_to_mask.items()):
                if obj_id in hidden:
                    continue
                m = F.interpolate(low[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0
                if bool(m.any()):
                    masks[int(obj_id)] = m.cpu().numpy()
            yield i, masks


@dataclasses.dataclass
class Sam3TextResult(PipelineResult):
    """A `PipelineResult` whose masks come from the SAM3 pass, not from a point-prompted stage 2."""

    packed: list[np.ndarray] | None = dataclasses.field(default=None, repr=False)

    def masks(self, progress: ProgressFn | None = None) -> Iterator[tuple[int, np.ndarray]]:
        if self.packed is None:
            yield from super().masks(progress)
            return
        h, w = self.size
        for i, bits in enumerate(self.packed):
            if progress is not None:
                progress("masks", i + 1, len(self.packed))
            yield i, np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool)


class Sam3TextPipeline:
    """Duck-types `Pipeline` for the evaluation runner (see the module docstring)."""

    def __init__(self, segmenter: Sam3TextSegmenter, config: PipelineConfig | None = None):
        self.segmenter = segmenter
        self.config = config or PipelineConfig()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", config: PipelineConfig | None = None,
                        **settings: Any) -> "Sam3TextPipeline":
        """`settings` (k, first_frame_only, ...) build the `PipelineConfig` when `config` is not given."""
        return cls(Sam3TextSegmenter.from_pretrained(path, device=device), config or PipelineConfig(**settings))

    def _run(self, video: Any, query: str, k: int | None, keep_masks: bool) -> Sam3TextResult:
        cfg = dataclasses.replace(self.config, k=k) if k is not None else self.config
        q = check_query(query)
        v = open_video(video)
        anchors = anchor_frames(len(v), cfg.k, cfg.first_frame_only)
        points: dict[int, np.ndarray] = {}
        packed: list[np.ndarray] = []
        last = len(v) - 1 if keep_masks else max(anchors)
        for i, objs in self.segmenter.segment(v, q, last_frame=last):
            if i in anchors:
                pts = [p for m in objs.values() for p in interior_points(m, min_fraction=1.0)[:1]]
                points[i] = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
            if keep_masks:
                h, w = int(v.height), int(v.width)
                union = np.zeros((h, w), dtype=bool)
                for m in objs.values():
                    union |= m
                packed.append(np.packbits(union.reshape(-1)))
        return Sam3TextResult(v, q, points, cfg, None, packed=packed if keep_masks else None)

    def __call__(self, video: Any, query: str, k: int | None = None, tau: float | None = None,
                 l: int | None = None, mask_backend: str | None = None, fusion: str | None = None,
                 progress: ProgressFn | None = None) -> Sam3TextResult:
        """Points, count and masks from one SAM3 pass (`tau`, `l`, `fusion`, `mask_backend` do not apply)."""
        return self._run(video, query, k, keep_masks=True)

    def point(self, video: Any, query: str, k: int | None = None, l: int | None = None,
              progress: ProgressFn | None = None) -> Sam3TextResult:
        return self._run(video, query, k, keep_masks=False)


def tiny_sam3_video_config(image_size: int = 112, vocab_size: int = 300) -> Any:
    """A ~5M-parameter random-initialised `Sam3VideoConfig` (tiny detector, CLIP text encoder and
    tracker) for CPU tests. Detection thresholds are 0 so random weights still report objects."""
    from transformers import Sam3VideoConfig
    from transformers.models.sam3.configuration_sam3 import Sam3Config

    small = dict(hidden_size=128, num_layers=1, num_attention_heads=2, intermediate_size=128)
    detector = Sam3Config(
        vision_config=tiny_sam3_vision_config(image_size),
        text_config=dict(model_type="clip_text_model", vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         projection_dim=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=TEXT_MAX_LENGTH, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        geometry_encoder_config=small, detr_encoder_config=small,
        detr_decoder_config=dict(small, num_queries=4),
        mask_decoder_config=dict(hidden_size=128, num_upsampling_stages=3, num_attention_heads=2),
    )
    return Sam3VideoConfig(detector_config=detector, tracker_config=tiny_sam3_tracker_config(image_size),
                           low_res_mask_size=32, hotstart_delay=0, score_threshold_detection=0.0,
                           new_det_thresh=0.0, max_num_objects=4)


def save_tiny_sam3_video(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random `Sam3VideoModel` folder with a byte-level text tokenizer."""
    import torch
    from transformers import Sam3VideoModel

    out = Path(out_dir)
    tok = byte_level_tokenizer(["<|startoftext|>", "<|endoftext|>"], bos_token="<|startoftext|>",
                               eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    Sam3VideoModel(tiny_sam3_video_config(vocab_size=len(tok))).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return out
