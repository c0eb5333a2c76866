"""Molmo2 (AI2's successor to Molmo, native in transformers as `Molmo2ForConditionalGeneration`)
as a stage-1 pointer.

    >>> pipe = Pipeline.from_pretrained("Molmo2-VideoPoint-4B/", pointer="molmo2",   # local folders
    ...                                 mask_backend="sam3", mask_checkpoint="sam3-tracker/")
    >>> pointer = Molmo2Pointer.from_pretrained("Molmo2-VideoPoint-4B/")   # or stage 1 alone

Output format. transformers 5.24 ships Molmo2's model and processors but no decoder for its
answers (nothing in its molmo2 code or docstrings parses points). The format below is the one
the `extract_video_points` example of AI2's Molmo2 model card parses (its COORD / FRAME / POINTS
regexes, seen quoted in public code; the card itself could not be fetched here, and no real
Molmo2 output was ever produced here). A video pointing / counting / tracking answer is

    <points coords="0.5 1 512 300 2 610 455;1.0 1 520 310">the dogs</points>
    <tracks coords="0.5 1 512 300;1.0 1 520 310"/>

`coords` holds frame groups separated by tab, ':', ',' or ';'. Each group is a timestamp in
seconds followed by (object id, x, y) triples, x and y scaled to 0..1000 of the frame's width
and height. Timestamps are the ones the prompt gave the model: Molmo2's processor writes each
frame's time (`frame_index / fps`, one decimal) before its patches, so a timestamp maps back to
the prompted frame nearest to it. Object ids are kept (`point_ids`): the same id across
timestamps is the same object for tracking, and the number of distinct ids is the count.

What is not supported: MolmoPoint-8B's grounding-token pointing (its points are patch-token
ids decoded with the vision pooling map, not text), and Molmo1's `<point x= y=>` image format.

Preprocessing: `Molmo2Processor` cannot be constructed without torchvision (its base class
check looks the video processor up in a mapping that only exists with torchvision), and no
torchvision wheel works with the CPU torch this project pins. So its parts are driven directly:
the real `Molmo2VideoProcessor` (with its torchvision resize replaced by the same bilinear
`torch.nn.functional.interpolate`, antialias off, as Molmo2 calls it), the tokenizer's chat
template, and `Molmo2Processor.get_video_string` for the frame/timestamp token layout.
"""

from __future__ import annotations

import json
import re
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from videomolmo.errors import CheckpointError, ConfigError, VideoMolmoError
from videomolmo.hf_local import byte_level_tokenizer, load_local_tokenizer, load_native_model
from videomolmo.pointers import Pointer, ProgressFn, register_pointer
from videomolmo.segmentation.sam2 import _resolve_dtype, validate_checkpoint_dir
from videomolmo.settings import check_device
from videomolmo.video import open_video

#: Tokens that make up a frame's patch block (`Molmo2Processor.image_token_ids`): they get
#: `mm_token_type_ids == 1`, which the model attends to bidirectionally.
_IMAGE_TOKENS = ("<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>", "<frame_start>", "<im_end>",
                 "<frame_end>", "<im_low>")
DEFAULT_PROMPT = "Point to {query}."
COORD_SCALE = 1000.0

_TAG_RE = re.compile(r"<(points|tracks)\b([^>]*?)/?>", re.IGNORECASE)
_COORDS_RE = re.compile(r"""\bcoords\s*=\s*["']([^"']*)["']""")
_GROUP_SPLIT_RE = re.compile(r"[\t:;,]")


class Molmo2OutputError(VideoMolmoError):
    """A Molmo2 answer that cannot be read as video points (raised only in strict parsing)."""


@dataclass(frozen=True)
class Molmo2Point:
    """One decoded point: timestamp (seconds), object id, pixel (x, y) on the frame."""

    time: float
    obj_id: int
    x: float
    y: float


def parse_video_points(
    text: str, width: int, height: int, strict: bool = False
) -> tuple[list[Molmo2Point], list[str]]:
    """Decode Molmo2's `<points|tracks coords="...">` answers into pixel points.

    Returns (points, problems). Anything unreadable (a tag without coords, a group whose numbers
    are not (id, x, y) triples, a coordinate outside 0..1000, a non-numeric token) is skipped
    and described in `problems`; with `strict=True` the first problem raises
    `Molmo2OutputError` instead. Text with no tag at all is a valid empty answer ("none here").
    """
    if not isinstance(text, str):
        raise Molmo2OutputError(f"Molmo2 output must be text, got {type(text).__name__}")
    points: list[Molmo2Point] = []
    problems: list[str] = []

    def problem(msg: str) -> None:
        if strict:
            raise Molmo2OutputError(f"unreadable Molmo2 output: {msg}")
        problems.append(msg)

    for tag in _TAG_RE.finditer(text):
        m = _COORDS_RE.search(tag.group(2))
        if m is None:
            problem(f"<{tag.group(1)}> tag without coords=\"...\": {tag.group(0)[:80]!r}")
            continue
        for group in _GROUP_SPLIT_RE.split(m.group(1)):
            fields = group.split()
            if not fields:
                continue
            try:
                nums = [float(f) for f in fields]
            except ValueError:
                problem(f"non-numeric value in frame group {group.strip()!r}")
                continue
            t, rest = nums[0], nums[1:]
            if not np.isfinite(nums).all() or t < 0:
                problem(f"bad timestamp or value in frame group {group.strip()!r}")
                continue
            if not rest or len(rest) % 3:
                problem(f"frame group {group.strip()!r} is not 'time id x y [id x y ...]'")
                continue
            for i in range(0, len(rest), 3):
                obj, x, y = rest[i : i + 3]
                if obj != int(obj) or not (0 <= x <= COORD_SCALE and 0 <= y <= COORD_SCALE):
                    problem(f"point (id {obj:g}, x {x:g}, y {y:g}) at {t:g}s is outside 0..{COORD_SCALE:g}")
                    continue
                points.append(Molmo2Point(t, int(obj), x / COORD_SCALE * width, y / COORD_SCALE * height))
    return points, problems


def points_to_frames(
    points: Sequence[Molmo2Point], frames: Sequence[int], fps: float
) -> tuple[dict[int, list[Molmo2Point]], list[str]]:
    """Assign each point to the prompted frame whose timestamp (`index / fps`) is nearest.

    Timestamps further than half a frame gap (at least 0.05 s, the prompt's rounding) outside
    the prompted span are dropped as problems: the model never saw such a frame.
    """
    out: dict[int, list[Molmo2Point]] = {int(i): [] for i in frames}
    problems: list[str] = []
    if not frames:
        return out, problems
    idx = np.asarray(sorted(int(i) for i in frames))
    times = idx / float(fps)
    gap = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    tol = max(0.05, gap / 2)
    for p in points:
        if p.time < times[0] - tol or p.time > times[-1] + tol:
            problems.append(f"timestamp {p.time:g}s is outside the prompted frames "
                            f"({times[0]:.2f}s..{times[-1]:.2f}s); point dropped")
            continue
        out[int(idx[int(np.argmin(np.abs(times - p.time)))])].append(p)
    return out, problems


# --------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _torch_resize(self, image, size, resample=None, antialias=True, **kwargs):
    """`TorchvisionBackend.resize` for Molmo2's one call (bilinear, square, antialias off)."""
    import torch.nn.functional as F

    return F.interpolate(image, size=(size.height, size.width), mode="bilinear", align_corners=False,
                         antialias=antialias)


def load_video_processor(root: Path) -> Any:
    """`Molmo2VideoProcessor` from the folder's `video_preprocessor_config.json` (defaults when
    absent), resizing with torch so that torchvision is not needed."""
    from transformers.models.molmo2.video_processing_molmo2 import Molmo2VideoProcessor

    cfg_path = root / "video_preprocessor_config.json"
    if cfg_path.is_file():
        kwargs = {k: v for k, v in _read_json(cfg_path).items()
                  if k not in ("video_processor_type", "processor_class", "image_processor_type")}
    else:
        kwargs = {}
    try:
        vp = Molmo2VideoProcessor(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: not a Molmo2 video processor config ({exc})") from None
    vp.resize = types.MethodType(_torch_resize, vp)
    return vp


def validate_molmo2_dir(path: str | Path) -> Path:
    """A complete Molmo2 folder: config.json (model_type molmo2), safetensors, tokenizer files."""
    root = validate_checkpoint_dir(path, ("molmo2",), "Molmo2")
    if not (root / "tokenizer.json").is_file() and not (root / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{root}: no tokenizer.json / tokenizer_config.json in the Molmo2 checkpoint directory")
    return root


def load_molmo2(path: str | Path, device: str = "cpu", dtype: Any = None) -> tuple[Any, Any, Any, dict]:
    """(model, tokenizer, video processor, processor settings) from a local Molmo2 folder.

    Native classes only: no remote code, `local_files_only=True`, weights from safetensors.
    """
    root = validate_molmo2_dir(path)
    from transformers import Molmo2ForConditionalGeneration

    torch_dtype = _resolve_dtype(dtype)
    tokenizer = load_local_tokenizer(root, "Molmo2")
    missing_tokens = [t for t in ("<im_patch>", "<frame_start>", "<frame_end>")
                      if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing_tokens:
        raise CheckpointError(f"{root}: the tokenizer lacks Molmo2's special tokens {missing_tokens}")
    settings = {"use_frame_special_tokens": True, "video_use_col_tokens": False}
    proc_cfg = root / "processor_config.json"
    if proc_cfg.is_file():
        data = _read_json(proc_cfg)
        settings.update({k: data[k] for k in settings if k in data})
    if not getattr(tokenizer, "chat_template", None):
        jinja = root / "chat_template.jinja"
        if jinja.is_file():
            tokenizer.chat_template = jinja.read_text()
        elif (root / "chat_template.json").is_file():
            tokenizer.chat_template = _read_json(root / "chat_template.json").get("chat_template")
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(f"{root}: no chat template (chat_template.jinja or in tokenizer_config.json)")
    video_processor = load_video_processor(root)
    model = load_native_model(Molmo2ForConditionalGeneration, root, "Molmo2", torch_dtype)
    model.to(device).eval()
    return model, tokenizer, video_processor, settings


# --------------------------------------------------------------------------- pointer


@register_pointer("molmo2")
class Molmo2Pointer(Pointer):
    """Molmo2 (transformers Molmo2ForConditionalGeneration) from a local folder given as --model DIR.

    The anchor frames are given to Molmo2 as its video (no resampling; one generate call per
    `frames_per_call` of them), each labelled with its real timestamp, so the answer's
    timestamps map back to the anchors. `point_ids` keeps
    the object ids of the last `point` call: {frame: [(id, x, y), ...]}.
    """

    def __init__(self, model: Any, tokenizer: Any, video_processor: Any, settings: Mapping[str, Any] | None = None,
                 prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 512, frames_per_call: int | None = None,
                 generate_kwargs: Mapping[str, Any] | None = None):
        if "{query}" not in prompt:
            raise ConfigError(f"the Molmo2 prompt must contain {{query}}, got {prompt!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.video_processor = video_processor
        self.settings = dict(settings or {"use_frame_special_tokens": True, "video_use_col_tokens": False})
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.frames_per_call = int(frames_per_call or getattr(video_processor, "num_frames", 64) or 64)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.point_ids: dict[int, list[tuple[int, float, float]]] = {}
        self.last_answers: list[str] = []

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: Any = None, **kwargs: Any) -> "Molmo2Pointer":
        model, tokenizer, vp, settings = load_molmo2(path, device=device, dtype=dtype)
        return cls(model, tokenizer, vp, settings, **kwargs)

    @classmethod
    def create(cls, model: str | Path | None = None, device: str = "cpu", **options: Any) -> "Molmo2Pointer":
        """`--pointer molmo2 --model DIR`: the other CLI options (preset, baseline) do not apply."""
        if model is None:
            raise ConfigError("--pointer molmo2 needs --model DIR (a local Molmo2 checkpoint folder)")

        return cls.from_pretrained(model, device=check_device(device))

    # -- prompt
    def prompt_for(self, query: str) -> str:
        """A question ("how many birds are there?") goes to Molmo2 as asked, as in its counting
        prompts; a referring expression goes into the pointing template."""
        q = query.strip()
        return q if q.endswith("?") else self.prompt.format(query=q)

    def _video_string(self, grid: Any, timestamps: Sequence[float]) -> str:
        from transformers import Molmo2Processor

        # `get_video_string` reads only these two settings from the processor.
        return Molmo2Processor.get_video_string(types.SimpleNamespace(**self.settings), grid, timestamps)

    def build_inputs(self, frames: np.ndarray, timestamps: Sequence[float], query: str) -> dict:
        """Model inputs for one clip: (T, H, W, 3) uint8 frames with their timestamps (seconds)."""
        import torch
        from transformers.video_utils import VideoMetadata

        t, h, w = frames.shape[:3]
        vis = self.video_processor(
            videos=[frames], video_metadata=[VideoMetadata(total_num_frames=t, fps=1.0, width=w, height=h)],
            do_sample_frames=False, return_tensors="pt",
        )
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.prompt_for(query)}]}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        video_token = getattr(self.tokenizer, "video_token", None) or "<|video|>"
        if text.count(video_token) != 1:
            raise CheckpointError(f"the Molmo2 chat template must place one {video_token} for a video "
                                  f"(it produced {text.count(video_token)})")
        text = text.replace(video_token, self._video_string(vis["video_grids"][0], timestamps))
        bos = self.tokenizer.bos_token or self.tokenizer.eos_token
        if bos and not text.startswith(bos):
            text = bos + text  # as Molmo2Processor.__call__ does
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        image_ids = self.tokenizer.convert_tokens_to_ids(list(_IMAGE_TOKENS))
        mm = torch.isin(enc["input_ids"], torch.tensor(image_ids)).long()
        device = self.model.device
        dtype = next(self.model.parameters()).dtype
        return {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
            "mm_token_type_ids": mm.to(device),
            "pixel_values_videos": vis["pixel_values_videos"].to(device=device, dtype=dtype),
            "video_token_pooling": vis["video_token_pooling"].to(device),
            "video_grids": vis["video_grids"].to(device),
        }

    def generate(self, inputs: Mapping[str, Any]) -> str:
        import torch

        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      **self.generate_kwargs)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    # -- Pointer API
    def point(self, video, query: str, frames: Sequence[int], l: int | None = None,
              progress: ProgressFn | None = None) -> dict[int, np.ndarray]:
        """{frame: (N, 2) pixel points} for every anchor in `frames` (`l` is VideoMolmo's and unused)."""
        video = open_video(video)
        frames = [int(i) for i in frames]
        h, w, fps = int(video.height), int(video.width), float(video.fps)
        self.point_ids = {i: [] for i in frames}
        self.last_answers = []
        chunks = [frames[i : i + self.frames_per_call] for i in range(0, len(frames), self.frames_per_call)]
        for n, chunk in enumerate(chunks):
            clip = np.stack([np.asarray(video[i]) for i in chunk])
            answer = self.generate(self.build_inputs(clip, [i / fps for i in chunk], query))
            self.last_answers.append(answer)
            pts, problems = parse_video_points(answer, w, h)
            by_frame, more = points_to_frames(pts, chunk, fps)
            for msg in problems + more:
                warnings.warn(f"molmo2 pointer: {msg}", stacklevel=2)
            for i, ps in by_frame.items():
                self.point_ids[i].extend((p.obj_id, p.x, p.y) for p in ps)
            if progress is not None:
                progress("pointing", min(len(frames), (n + 1) * self.frames_per_call), len(frames))
        return {i: np.asarray([(x, y) for _, x, y in self.point_ids[i]], dtype=np.float64).reshape(-1, 2)
                for i in frames}


# --------------------------------------------------------------------------- tiny checkpoints

#: A Molmo2-style chat template: the video first, then the prompt (what the real template does
#: for one user turn with a video), then the assistant cue.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'video' %}<|video|>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_molmo2(out_dir: str | Path, seed: int = 0, frame_size: int = 56) -> Path:
    """Write a random-initialised ~0.3M-parameter Molmo2 folder (model, byte-level tokenizer with
    Molmo2's special tokens, video processor config, chat template) for CPU tests; its answers
    are meaningless, its code paths are the real model's."""
    import torch
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image|>", "<|video|>", *_IMAGE_TOKENS]
    tok = byte_level_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tok.chat_template = TINY_CHAT_TEMPLATE
    tok.save_pretrained(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    from transformers.models.molmo2.video_processing_molmo2 import Molmo2VideoProcessor

    Molmo2VideoProcessor(size={"height": frame_size, "width": frame_size}, pooling_size=[2, 2],
                         num_frames=8).save_pretrained(out)
    cfg = Molmo2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=2, head_dim=16, image_size=[frame_size, frame_size], patch_size=14),
        adapter_config=dict(vision_feature_layer=[-1], hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                            head_dim=16, intermediate_size=64, text_hidden_size=64),
        text_config=dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                         vocab_size=len(tok), additional_vocab_size=0, num_hidden_layers=2, intermediate_size=128,
                         max_position_embeddings=4096),
        image_start_token_id=ids["<im_start>"], low_res_image_start_token_id=ids["<low_res_im_start>"],
        image_end_token_id=ids["<im_end>"], image_patch_id=ids["<im_patch>"],
        frame_start_token_id=ids["<frame_start>"], frame_end_token_id=ids["<frame_end>"],
    )
    torch.manual_seed(seed)
    model = Molmo2ForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    return out
