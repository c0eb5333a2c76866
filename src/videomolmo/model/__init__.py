"""The VideoMolmo model (stage 1: frames + query -> point text).

Small API, in the order a training loop uses it::

    from videomolmo.model import ModelConfig, VideoMolmo, Processor, collate, build_tokenizer

    cfg = ModelConfig.from_name("tiny")          # presets: molmo-7b-d, videomolmo-7b, tiny, test-tiny
    tok = build_tokenizer(cfg)                   # bytes for tiny presets; HF files for 7B
    proc = Processor(cfg, tok)
    ex = proc(frame, previous_frames, "the red square", answer='<point x="12" y="40" alt="...">...</point>')
    batch = collate([ex, ...], tok.pad_token_id, padding_side="right")   # or "left"
    out = model(**batch)                         # out.loss: CE on answer tokens (+EOS) only
    out.loss.backward()

    gen = collate([proc(frame, prev, query)], tok.pad_token_id, padding_side="left")
    texts = [tok.decode(t) for t in model.generate(gen, eos_token_id=tok.eos_token_id)]

- `previous_frames`: raw frames before `frame`, oldest first; the last `cfg.context_frames`
  (l=4) are used and black frames pad the start of a video. Context features carry no gradient.
- `labels` in a batch are aligned with `input_ids` (shifted inside `forward`).
- Checkpoints: `save_pretrained(model, dir)` / `from_pretrained(dir)` (safetensors + config.json);
  `load_molmo_checkpoint(dir, cfg)` maps Molmo / VideoMolmo safetensors shards. Loaded models
  carry `model.processor` / `model.tokenizer` when the tokenizer is available.
- Videos: `point_video(model, processor, video, query, k=1, l=4, batch_size=8)`; several
  queries sharing one pass of the vision encoder: `point_video_queries(..., queries)`.
"""

from videomolmo.model.checkpoint import from_pretrained, load_molmo_checkpoint, save_pretrained
from videomolmo.model.config import LLMConfig, ModelConfig, VisionConfig
from videomolmo.model.pointing import FramePoints, VideoPoints, point_video, point_video_queries
from videomolmo.model.preprocess import IGNORE_INDEX, Processor, collate
from videomolmo.model.tokenizer import ByteTokenizer, build_tokenizer, load_hf_tokenizer
from videomolmo.model.videomolmo import VideoMolmo, VideoMolmoOutput

__all__ = [
    "FramePoints", "VideoPoints", "from_pretrained", "load_molmo_checkpoint", "point_video", "point_video_queries", "save_pretrained",
    "ByteTokenizer", "IGNORE_INDEX", "LLMConfig", "ModelConfig", "Processor", "VideoMolmo",
    "VideoMolmoOutput", "VisionConfig", "build_tokenizer", "collate", "load_hf_tokenizer",
]
