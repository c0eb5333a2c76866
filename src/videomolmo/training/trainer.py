"""The VideoMolmo training recipe: single process, or DDP / FSDP under `torchrun`.

- cross-entropy on the answer tokens only (the model's `forward` with processor labels),
- AdamW, betas (0.9, 0.95), eps 1e-6, separate learning rates for the LLM and for the
  vision tower, the connector (projector, pooling, pad embeddings) and the temporal module,
- `warmup` steps of linear warmup, then cosine decay to `final_lr_ratio` of each peak,
- gradient clipping at 1.0, gradient accumulation, fp32 or bf16 autocast,
- checkpoints every `checkpoint_every` steps (safetensors + JSON, see `checkpoint.py`) that
  resume exactly (weights, optimizer, data-stream RNG, torch RNG, step),
- loss, learning rates, throughput and held-out hit rate / F1 logged to `<out>/log.jsonl`.

Under `torchrun` (WORLD_SIZE > 1) the process group uses gloo on CPU and nccl on GPU; each
rank draws its own data stream, gradients are averaged by DDP, and rank 0 alone writes.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from videomolmo.data import load_dataset
from videomolmo.errors import CheckpointError, ConfigError, DatasetError, VideoError
from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer, collate
from videomolmo.model.checkpoint import save_pretrained
from videomolmo.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from videomolmo.training.grounding import HEAD_PREFIX, TrainModule, split_head_state, stack_targets
from videomolmo.training.log import JsonlLogger

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """One training run. `model` names a `ModelConfig` preset; `model_overrides` changes
    fields of it (e.g. `{"temporal": "none"}` for the ablation)."""

    model: str = "tiny"
    model_overrides: dict = field(default_factory=dict)
    data: str = "synth"  # "synth" (in-memory stream) or a dataset folder for load_dataset
    data_split: str | None = None
    curriculum: str = "probe2"
    steps: int = 4000
    batch_size: int = 16
    grad_accum: int = 1
    lr_llm: float = 1e-3
    lr_vision: float = 1e-4
    lr_connector: float = 2e-3  # projector + pooling + pad embeddings
    lr_temporal: float = 2e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-6
    warmup: int = 10
    final_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: str = "fp32"
    seed: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_every: int = 250
    eval_clips: int = 40
    init: str | None = None  # a saved model folder / safetensors file to start from
    init_vision: str | None = None  # dense-pretrained ViT (`pretrain_vision.py` output)
    freeze_vision: bool = False
    fsdp: bool = False
    answer_label: str = "object"
    # Auxiliary grounding loss (`grounding.py`): weight (0 = off, the paper's recipe) and the
    # decoder layer it reads (0 = the middle one).
    grounding_weight: float = 0.0
    grounding_layer: int = 0
    # Auxiliary per-token motion loss on the temporal module's output (`motion.py`; 0 = off).
    motion_weight: float = 0.0
    # Auxiliary per-token shape + motion loss at the grounding head's decoder layer
    # (`attributes.py`; 0 = off).
    attribute_weight: float = 0.0
    attribute_at: str = "head"  # or "input": the decoder's input (the connector's output)
    # Weight of the answer tokens that decide the point count (`count_decisions.py`; 1 = the
    # plain answer loss).
    count_weight: float = 1.0
    # The ViT's input size, if not the preset's: the synthetic clips keep the preset's size
    # (`ModelConfig.synth_size`) and each frame is upsampled, so the patch grid is finer over
    # the same clips; an --init at another size gets its position embeddings interpolated.
    image_size: int | None = None
    # Parameter groups (vision / connector / temporal / llm) kept frozen: the motion stage
    # trains only the temporal module and the connector.
    freeze: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train: --precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train: {name} must be >= 1, got {getattr(self, name)}")
        bad = set(self.freeze) - {"vision", "connector", "temporal", "llm"}
        if bad:
            raise ConfigError(f"train: --freeze takes vision, connector, temporal, llm; got {sorted(bad)}")
        self.freeze = tuple(self.freeze)  # type: ignore[assignment]
        for name in ("lr_llm", "lr_vision", "lr_connector", "lr_temporal", "grounding_weight", "motion_weight",
                     "attribute_weight", "count_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"train: {name} must be >= 0, got {getattr(self, name)}")
        from videomolmo.training.attributes import check_attribute_at

        check_attribute_at(self.attribute_at)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "TrainConfig":
        """Presets:
        - `tiny-synth`: the bundled model's recipe (LLM 1e-3, connector + temporal 2e-4,
          vision 1e-4, batch 8, 5,000 steps, curriculum one sprite for 30 % -> 2-8 sprites with
          motion-only queries, auxiliary grounding loss weight 1 on the middle decoder layer);
        - `tiny-ablation`: the Table-6 budget, the same recipe as `tiny-synth`
          (`model_overrides` / `--temporal` picks the temporal variant);
        - `tiny-motion`: the motion stage -- from a trained model (`--init`), the ViT frozen,
          the temporal module at its own LR 1e-3, connector 2e-4, LLM 5e-4, half the clips
          motion-heavy (`motion-stage` curriculum), per-token motion loss (weight 1) plus the
          grounding loss; 2,000 steps. (`--freeze vision,llm` trains only the temporal module
          and the connector.)
        - `tiny-point-head`: a patch-selection pointing head (`model/point_head.py`) on a
          trained model (`--init`): everything else frozen, so the text answers are unchanged
          and the two ways of reading points out compare on the same model; the head learns
          from the grounding loss at 3e-3; 600 steps of the `mix` curriculum.
        - `test`: the `test-tiny` model for a few steps (tests, CI);
        - `molmo-7b`: the paper's fine-tuning recipe (LLM 1e-5, vision/connector/temporal 5e-6,
          bf16, FSDP)."""
        # Connector / temporal LR 2e-4, not probe 2's 2e-3: at 2e-3 the projector output grew
        # into one huge common vector (std 0.1 -> 117 in 900 steps, patch-to-patch spread 4 %)
        # and the answers became exactly image-independent. The grounding loss: without it the
        # answer loss alone had not matched queries to sprites after 5,100 steps (TRAINING.md).
        tiny_synth = cls(steps=5000, batch_size=8, lr_connector=2e-4, lr_temporal=2e-4, grounding_weight=1.0)
        presets = {
            "tiny-synth": tiny_synth,
            # The LLM trains too: frozen, it has no way to match "moving left" to the new
            # motion features of the image tokens.
            "tiny-motion": replace(tiny_synth, steps=2000, lr_temporal=1e-3, lr_llm=5e-4, motion_weight=1.0,
                                   freeze=("vision",), curriculum="motion-stage", warmup=50,
                                   eval_every=500),
            "tiny-point-head": replace(tiny_synth, steps=600, lr_llm=3e-3, warmup=20, curriculum="mix",
                                       freeze=("vision", "connector", "temporal", "llm"), eval_every=0,
                                       model_overrides={"point_head": "patch"}),
            # Table 6 at small scale: the bundled recipe, the variant picked by --temporal.
            "tiny-ablation": tiny_synth,
            "test": cls(model="test-tiny", steps=4, batch_size=2, checkpoint_every=2, log_every=1,
                        eval_every=0, eval_clips=2, curriculum="mix"),
            "molmo-7b": cls(model="videomolmo-7b", lr_llm=1e-5, lr_vision=5e-6, lr_connector=5e-6,
                            lr_temporal=5e-6, precision="bf16", batch_size=1, grad_accum=8,
                            steps=20000, curriculum="mix", fsdp=True, eval_every=0,
                            checkpoint_every=500, answer_label="object"),
        }
        if name not in presets:
            raise ConfigError(f"train: unknown preset {name!r}; choose from {sorted(presets)}")
        cfg = presets[name]
        return replace(cfg, **overrides) if overrides else cfg


def _group_of(param_name: str) -> str:
    top = param_name.split(".", 1)[0]
    if top in ("vision", "temporal"):
        return top
    if top in ("pool", "projector", "pad_embed"):
        return "connector"
    if top == "point_head":  # its own group, so `--freeze llm` still trains it
        return "point_head"
    return "llm"  # llm.*, new_embedding


def lr_factor(step: int, total: int, warmup: int, final_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 to `final_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Named parameter groups with their peak LRs: vision / connector / temporal / llm."""
    groups: dict[str, list] = {"vision": [], "connector": [], "temporal": [], "llm": [], "point_head": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[_group_of(name)].append(p)
    # The point head reads the decoder's hidden states: it learns at the LLM's rate.
    lrs = {"vision": cfg.lr_vision, "connector": cfg.lr_connector, "temporal": cfg.lr_temporal,
           "llm": cfg.lr_llm, "point_head": cfg.lr_llm}
    return [{"name": k, "params": v, "lr": lrs[k], "peak_lr": lrs[k]} for k, v in groups.items() if v]


def load_vision_init(model, path: str | Path) -> int:
    """Copy a dense-pretrained `CLIPVisionModel` state dict into `model.vision.clip`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained vision weights not found")
    state = {k: v for k, v in load_file(str(path)).items() if "post_layernorm" not in k}
    missing, unexpected = model.vision.clip.load_state_dict(state, strict=False)
    missing = [m for m in missing if "post_layernorm" not in m]
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match the model's ViT (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return len(state)


def save_model(model, out: str | Path, trained_on: list[dict] | None = None) -> Path:
    """Weights (`model.safetensors`) + `config.json` (`videomolmo.model.checkpoint` format), so
    `from_pretrained(out)` loads it."""
    return save_pretrained(model, out, trained_on=trained_on)


def load_model_weights(model, path: str | Path) -> None:
    """Load a saved model folder (or a bare .safetensors file) into `model` (strict)."""
    from safetensors.torch import load_file

    path = Path(path)
    f = path / "model.safetensors" if path.is_dir() else path
    if not f.is_file():
        raise CheckpointError(f"{path}: no model.safetensors to initialise from")
    state = load_file(str(f))
    pos = "vision.clip.embeddings.position_embedding.weight"
    target = model.state_dict().get(pos)
    if pos in state and target is not None and state[pos].shape != target.shape:
        # Fine-tuning at another input size (`--image-size`): the ViT's grid positions are
        # interpolated; every other weight is size-independent.
        from videomolmo.model.vision import resize_position_embedding

        state[pos] = resize_position_embedding(state[pos], target.shape[0])
    own = {k: v.shape for k, v in model.state_dict().items() if k.startswith("temporal.")}
    theirs = {k: v.shape for k, v in state.items() if k.startswith("temporal.")}
    if own != theirs:
        # Another temporal variant than the checkpoint's (the single-frame control, or the
        # Table-6 variants started from one trained model): the checkpoint's module weights have
        # nowhere to go, and the model's module starts from its own init.
        state = {k: v for k, v in state.items() if not k.startswith("temporal.")}
        missing_ok = set(own)
    else:
        missing_ok = set()
    if getattr(model, "point_head", None) is None:
        # A text-pointing model started from a checkpoint with a patch head (e.g. the bundled
        # file): the head has nowhere to go; every other weight loads.
        state = {k: v for k, v in state.items() if not k.startswith("point_head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A patch pointing head put on a text-pointing checkpoint starts from its own init.
    missing = [k for k in missing if not k.startswith("point_head.") and k not in missing_ok]
    if missing or unexpected:
        raise CheckpointError(f"{f}: does not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")


class _DatasetStream:
    """Training examples from a dataset folder: every (sample, frame) pair, shuffled per epoch
    by (seed, epoch, rank) so a resumed run sees the same order."""

    def __init__(self, root: str, split: str | None, seed: int, rank: int, world: int,
                 context: int, decimals: int, label: str, target_masks: bool = False):
        from videomolmo.training.examples import LazyPointsFn

        self.ds = load_dataset(root, split=split)
        self.index = [(i, t) for i, s in enumerate(self.ds) for t in range(len(s))]
        if not self.index:
            raise DatasetError(f"{root}: the dataset has no frames to train on")
        self.seed, self.rank, self.world = seed, rank, world
        self.context, self.decimals, self.label = context, decimals, label
        self.target_masks = target_masks
        self.cursor = 0
        self._points_fn = LazyPointsFn()

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.index))
        return perm[self.rank::self.world]

    def _example(self, i: int, t: int):
        import cv2

        from videomolmo.training.examples import example_from_sample

        s = self.ds[i]
        lo = max(0, t - self.context)
        frames = []
        for p in s.frame_paths[lo:t + 1]:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"{p}: unreadable frame")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        return example_from_sample(s, frames, t, self._points_fn, self.decimals, self.label, self.target_masks)

    def batch(self, n: int, step: int):
        out = []
        per_epoch = len(self._order(0))
        for _ in range(n):
            epoch, pos = divmod(self.cursor, max(1, per_epoch))
            i, t = self.index[int(self._order(epoch)[pos])]
            out.append(self._example(i, t))
            self.cursor += 1
        return out

    def state(self) -> dict:
        return {"cursor": self.cursor}

    def set_state(self, state: dict) -> None:
        self.cursor = int(state["cursor"])


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


@dataclass
class TrainResult:
    final: Path  # the saved model folder (written by rank 0)
    model: Any  # this rank's trained (unwrapped) model
    step: int


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
          on_log: Callable[[dict], None] | None = None, stop_at: int | None = None) -> TrainResult:
    """Run (or resume) training; `result.final` is `<out>/final` (a saved model folder).

    `stop_at` ends the run after that step but keeps the LR schedule of `cfg.steps` (to
    reproduce a run that was stopped early, or to train in chunks)."""
    import torch.distributed as dist

    from videomolmo.training.examples import Curriculum, SynthStream
    from videomolmo.training.lineage import DataReplayWarning, replay_note, stream_record, streams_of
    out = Path(out)
    rank, world, local = _dist_info()
    distributed = world > 1
    if cfg.fsdp and not distributed:
        raise ConfigError("train: --fsdp needs torchrun with WORLD_SIZE > 1")
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    is_main = rank == 0

    ck = latest_checkpoint(out) if resume else None
    if resume and ck is None and is_main and (out / "checkpoints").exists():
        raise CheckpointError(f"{out}: --resume but no complete checkpoint found")
    if ck is not None:
        # The run's own recipe wins on resume; only `steps` may be changed (to extend a run).
        saved = json.loads((out / "train_config.json").read_text())
        cfg = replace(TrainConfig(**saved), steps=cfg.steps)
        if cfg.fsdp:
            # Checkpoints hold rank 0's optimizer shard only; resuming would silently lose the rest.
            raise ConfigError(f"{out}: resuming an FSDP run is not supported (its checkpoints hold the full "
                              "weights but only rank 0's optimizer shard); start from final/ with --init")
    mcfg = ModelConfig.from_name(cfg.model, **cfg.model_overrides)
    if cfg.image_size is not None and cfg.image_size != mcfg.vision.image_size:
        mcfg = replace(mcfg, vision=replace(mcfg.vision, image_size=cfg.image_size), synth_size=mcfg.clip_size)
    torch.manual_seed(cfg.seed)
    if cfg.init is None and "temporal_init" not in cfg.model_overrides:
        # From scratch the output projection must not start at zero: with wo = 0 no gradient
        # reaches q/k/v at first, and the module moved only ~12% in 9,000 steps (issue 11).
        mcfg = replace(mcfg, temporal_init="xavier")
    model = VideoMolmo(mcfg)
    if cfg.init:
        load_model_weights(model, cfg.init)
    if cfg.init_vision:
        load_vision_init(model, cfg.init_vision)
    if cfg.freeze_vision:
        for p in model.vision.parameters():
            p.requires_grad_(False)
    if cfg.freeze:
        for name, p in model.named_parameters():
            if _group_of(name) in cfg.freeze:
                p.requires_grad_(False)
    model.to(device)
    tok = build_tokenizer(mcfg)
    proc = Processor(mcfg, tok)
    module = TrainModule(model, cfg.grounding_weight, cfg.grounding_layer, cfg.motion_weight,
                         cfg.attribute_weight, cfg.attribute_at).to(device)
    groups = param_groups(model, cfg)

    def group(name: str, lr: float) -> dict:
        g = next((g for g in groups if g["name"] == name), None)
        if g is None:  # frozen: the head still learns, at that part's rate
            g = {"name": f"{name}_head", "params": [], "lr": lr, "peak_lr": lr}
            groups.append(g)
        return g

    if module.head is not None and not module.own_head:
        # The head reads the decoder's hidden states: it learns at the LLM's rate.
        group("llm", cfg.lr_llm)["params"].extend(module.head.parameters())
    if module.motion_head is not None:
        group("temporal", cfg.lr_temporal)["params"].extend(module.motion_head.parameters())
    if module.attribute_head is not None:
        group("llm", cfg.lr_llm)["params"].extend(module.attribute_head.parameters())
    opt = torch.optim.AdamW(groups, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)

    if cfg.data == "synth":
        stream = SynthStream(cfg.seed, cfg.steps, Curriculum.from_name(cfg.curriculum),
                             context=mcfg.context_frames, size=mcfg.clip_size,
                             decimals=mcfg.point_decimals, label=cfg.answer_label, rank=rank)
    else:
        stream = _DatasetStream(cfg.data, cfg.data_split, cfg.seed, rank, world, mcfg.context_frames,
                                mcfg.point_decimals, cfg.answer_label, target_masks=cfg.grounding_weight > 0)

    step, cpu_before, examples_seen = 0, 0.0, 0
    if ck is not None:
        step, state, extra = load_checkpoint(ck, optimizer=opt)
        state, head_state = split_head_state(state)
        model.load_state_dict(state)
        module.load_head_state(head_state)
        stream.set_state(extra["streams"][str(rank)] if "streams" in extra else extra["stream"])
        cpu_before = float(extra.get("cpu_s", 0.0))
        examples_seen = int(extra.get("examples", 0))
    if is_main and ck is None and (note := replay_note(cfg)):
        warnings.warn(note, DataReplayWarning, stacklevel=2)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
        (out / "model_config.json").write_text(mcfg.to_json())

    ddp_model = module
    if cfg.fsdp:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.clip.modeling_clip import CLIPEncoderLayer
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

        ddp_model = FSDP(module, auto_wrap_policy=ModuleWrapPolicy({Qwen2DecoderLayer, CLIPEncoderLayer}),
                         # An explicit device: without one FSDP refuses CPU (the gloo CI run).
                         device_id=device, use_orig_params=True)
    elif distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(module, device_ids=[local] if device.type == "cuda" else None,
                        find_unused_parameters=True)

    log = JsonlLogger(out / "log.jsonl", resume_step=step, enabled=is_main)
    heldout = None
    if is_main and cfg.eval_every > 0 and cfg.data == "synth":
        from videomolmo.training.heldout import heldout_items
        heldout = heldout_items(cfg.eval_clips, seed=cfg.seed, split="val",
                                context=mcfg.context_frames, size=mcfg.clip_size)

    def checkpoint() -> None:
        streams = {str(rank): stream.state()}
        if distributed:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, stream.state())
            streams = {str(r): s for r, s in enumerate(gathered)}
        weights = _full_state(ddp_model, module, cfg.fsdp)  # a collective under FSDP: every rank
        if is_main:
            save_checkpoint(out, step, weights, optimizer=opt, keep=cfg.keep_checkpoints,
                            extra={"streams": streams, "cpu_s": cpu_before + time.process_time() - t_cpu,
                                   "examples": examples_seen})
        if distributed:
            dist.barrier()

    amp = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
           else torch.autocast(device_type=device.type, enabled=False))
    bar = None
    if progress and is_main:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}"), TimeRemainingColumn())
        task = bar.add_task("train", total=cfg.steps, completed=step, info="")
        bar.start()
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    window_examples, window_t = 0, time.perf_counter()
    model.train()
    try:
        end = min(cfg.steps, stop_at) if stop_at else cfg.steps
        while step < end:
            f = lr_factor(step, cfg.steps, cfg.warmup, cfg.final_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = g["peak_lr"] * f
            opt.zero_grad(set_to_none=True)
            total_loss, answer_loss, grounding_loss = 0.0, 0.0, 0.0
            motion_loss, motion_acc = 0.0, 0.0
            attr_loss, shape_acc, attr_motion_acc = 0.0, 0.0, 0.0
            for micro in range(cfg.grad_accum):
                exs = stream.batch(cfg.batch_size, step)
                feats = [proc(e.frame, e.context, e.query, e.answer) for e in exs]
                batch = collate(feats, tok.pad_token_id, padding_side="right")
                if cfg.count_weight != 1.0:
                    from videomolmo.training.count_decisions import decision_weights
                    batch["label_weights"] = decision_weights(batch["labels"], tok, cfg.count_weight)
                if module.motion_head is not None:
                    from videomolmo.training.motion import motion_targets, stack_motion_targets
                    batch["motion_targets"] = stack_motion_targets(
                        [motion_targets(proc, e.motion_masks) if e.motion_masks is not None else None for e in exs],
                        *batch["image_input_idx"].shape[1:])
                if module.attribute_head is not None:
                    from videomolmo.training.attributes import attribute_targets
                    batch["attribute_targets"] = attribute_targets(proc, exs, *batch["image_input_idx"].shape[1:])
                if module.head is not None:
                    batch["patch_targets"] = stack_targets(
                        [proc.patch_targets(e.target_mask) if e.target_mask is not None else None for e in exs],
                        *batch["image_input_idx"].shape[1:])
                batch = {k: v.to(device) for k, v in batch.items()}
                sync = micro == cfg.grad_accum - 1 or not distributed or cfg.fsdp
                ctx = ddp_model.no_sync() if not sync else _null()
                with ctx, amp:
                    loss, ans, aux = ddp_model(batch)
                    loss = loss / cfg.grad_accum
                    loss.backward()
                total_loss += float(loss.detach())
                if module.last_motion is not None:
                    motion_loss += module.last_motion[0] / cfg.grad_accum
                    motion_acc += module.last_motion[1] / cfg.grad_accum
                if module.last_attributes is not None:
                    attr_loss += module.last_attributes[0] / cfg.grad_accum
                    shape_acc += module.last_attributes[1] / cfg.grad_accum
                    attr_motion_acc += module.last_attributes[2] / cfg.grad_accum
                answer_loss += float(ans.detach()) / cfg.grad_accum
                if aux is not None:
                    grounding_loss += float(aux.detach()) / cfg.grad_accum
            if cfg.fsdp:
                # Each rank holds a shard of the gradients: the norm must be reduced across ranks.
                gnorm = ddp_model.clip_grad_norm_(cfg.grad_clip)
            else:
                gnorm = torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            step += 1
            n_ex = cfg.batch_size * cfg.grad_accum * world
            examples_seen += n_ex
            window_examples += n_ex
            if step % cfg.log_every == 0 or step == end:
                now = time.perf_counter()
                row = {"step": step, "loss": total_loss, "grad_norm": float(gnorm),
                       **({"answer_loss": answer_loss, "grounding_loss": grounding_loss}
                          if module.head is not None else {}),
                       **({"motion_loss": motion_loss, "motion_acc": motion_acc}
                          if module.motion_head is not None else {}),
                       **({"attribute_loss": attr_loss, "attribute_shape_acc": shape_acc,
                           "attribute_motion_acc": attr_motion_acc}
                          if module.attribute_head is not None else {}),
                       **{f"lr_{g['name']}": g["lr"] for g in opt.param_groups},
                       "examples": examples_seen, "examples_per_s": window_examples / max(1e-9, now - window_t),
                       "wall_s": now - t_wall, "cpu_s": cpu_before + time.process_time() - t_cpu}
                window_examples, window_t = 0, now
                log.write(row)
                if on_log:
                    on_log(row)
                if bar is not None:
                    bar.update(task, completed=step, info=f"loss {total_loss:.3f}")
            if heldout is not None and (step % cfg.eval_every == 0 or step == end):
                from videomolmo.training.heldout import evaluate_model
                res = evaluate_model(model, proc, tok, heldout)
                log.write({"step": step, "eval": res})
                if on_log:
                    on_log({"step": step, "eval": res})
            if step % cfg.checkpoint_every == 0 or step == end:
                checkpoint()
    finally:
        if bar is not None:
            bar.stop()
    final = out / "final"
    if cfg.fsdp:
        # The wrapped model's parameters are shards; hand back (and save) a plain full copy.
        state, _ = split_head_state(_full_state(ddp_model, module, True))
        model = VideoMolmo(mcfg)
        model.load_state_dict(state)
    if is_main:
        save_model(model, final, trained_on=[*streams_of(cfg.init), stream_record(cfg, examples_seen)])
    if distributed:
        dist.barrier()
    return TrainResult(final=final, model=model, step=step)


def _full_state(wrapped, module, fsdp: bool) -> dict:
    """The model's and grounding head's weights as full tensors (`{**model, **head_state}`).

    Under FSDP the parameters are sharded and a state dict is an all-gather that every rank
    must enter; calling `state_dict()` on rank 0 alone deadlocks."""
    if not fsdp:
        return {**module.model.state_dict(), **module.head_state()}
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    # Offloading gathers to host memory on GPU; on CPU, torch 2.13's "offload" of CPU tensors
    # segfaults in the state-dict clone, and there is nothing to offload anyway.
    on_gpu = next(module.parameters()).device.type != "cpu"
    with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=on_gpu, rank0_only=False)):
        full = wrapped.state_dict()
    state = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
    state.update({HEAD_PREFIX + k[len("head."):]: v for k, v in full.items() if k.startswith("head.")})
    return state


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
