"""`videomolmo train` and `videomolmo pretrain-vision`: the training recipe from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from videomolmo.cli.app import command, console, err_console
from videomolmo.errors import CheckpointError, ConfigError, DatasetError
from videomolmo.files import check_safetensors, ensure_writable_dir
from videomolmo.training.examples import CURRICULA, Curriculum


def _check_weights(folder: Path) -> None:
    """`--init DIR` (or one .safetensors file): every weights file must be complete (checked
    before the model is built)."""
    if folder.is_file() and folder.suffix == ".safetensors":
        check_safetensors(folder)
        return
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: --init needs a saved model folder (config.json + *.safetensors)")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors weights in it")
    for f in files:
        check_safetensors(f)


def _check_latest_checkpoint(out: Path) -> None:
    """On resume: the checkpoint to resume from must be complete, optimizer state included."""
    from videomolmo.training.checkpoint import latest_checkpoint

    ck = latest_checkpoint(out) if (out / "checkpoints").exists() else None
    if ck is not None:
        for f in sorted(ck.glob("*.safetensors")):
            check_safetensors(f)


def _check_run_dir(out: Path, resume: bool) -> None:
    """A run folder that already holds a run is continued (--resume) or refused, never
    silently overwritten from step 0."""
    import os

    ensure_writable_dir(out)
    if resume:
        _check_latest_checkpoint(out)
        return
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun rank 0 may already have started writing this very run
    held = [name for name in ("checkpoints", "log.jsonl", "final") if (out / name).exists()]
    if held:
        raise ConfigError(f"{out}: holds a training run already ({', '.join(held)}); pass --resume to continue "
                          "it, or choose another --out")


@command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Run folder: checkpoints, log.jsonl, final/."),
    preset: str = typer.Option("tiny-synth", "--preset",
                               help="tiny-synth | tiny-ablation | tiny-motion | tiny-point-head | test | molmo-7b"),
    data: str = typer.Option("synth", "--data",
                             help="'synth' (in-memory synthetic stream) or a dataset folder."),
    split: Optional[str] = typer.Option(None, "--split", help="Dataset split (for --data DIR)."),
    init: Optional[Path] = typer.Option(None, "--init", help="Saved model folder to start from."),
    init_vision: Optional[Path] = typer.Option(None, "--init-vision",
                                               help="Dense-pretrained ViT (pretrain-vision output)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's latest checkpoint."),
    steps: Optional[int] = typer.Option(None, "--steps"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    grad_accum: Optional[int] = typer.Option(None, "--grad-accum"),
    lr_llm: Optional[float] = typer.Option(None, "--lr-llm"),
    lr_vision: Optional[float] = typer.Option(None, "--lr-vision"),
    lr_connector: Optional[float] = typer.Option(None, "--lr-connector"),
    lr_temporal: Optional[float] = typer.Option(None, "--lr-temporal"),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 | bf16"),
    point_head: Optional[str] = typer.Option(
        None, "--point-head", help="How the model points: text (coordinate digits) | patch (a patch-selection "
                                   "head trained by the grounding loss; one-token-per-patch presets only)."),
    point_head_layer: Optional[int] = typer.Option(
        None, "--point-head-layer", help="Decoder layer the patch head reads (0 = middle, -1 = top)."),
    temporal: Optional[str] = typer.Option(None, "--temporal",
                                           help="Temporal module: a name registered in videomolmo.model.temporal "
                                                "(`videomolmo info --registries` lists them)."),
    curriculum: Optional[str] = typer.Option(None, "--curriculum", help=" | ".join(CURRICULA)),
    seed: Optional[int] = typer.Option(None, "--seed"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every"),
    grounding_weight: Optional[float] = typer.Option(
        None, "--grounding-weight", help="Auxiliary per-patch grounding loss weight (0 = off; tiny presets only)."),
    grounding_layer: Optional[int] = typer.Option(
        None, "--grounding-layer", help="Decoder layer the grounding head reads (0 = middle)."),
    motion_weight: Optional[float] = typer.Option(
        None, "--motion-weight", help="Auxiliary per-token motion loss on the temporal module's output (0 = off)."),
    attribute_weight: Optional[float] = typer.Option(
        None, "--attribute-weight", help="Auxiliary per-token shape + motion loss at the grounding head's "
                                         "decoder layer (0 = off; synthetic data only)."),
    attribute_at: Optional[str] = typer.Option(
        None, "--attribute-at", help="Where the attribute loss reads: head (the grounding head's layer) | input "
                                     "(the decoder's input, the connector's output)."),
    image_size: Optional[int] = typer.Option(
        None, "--image-size", help="The ViT's input size, if not the preset's: the synthetic clips keep their size "
                                   "and are upsampled (a finer patch grid); an --init's position embeddings "
                                   "are interpolated."),
    count_weight: Optional[float] = typer.Option(
        None, "--count-weight", help="Weight of the answer tokens that decide how many points are given "
                                     "(1 = the plain answer loss)."),
    freeze: Optional[str] = typer.Option(
        None, "--freeze", help="Comma-separated parts kept frozen: vision, connector, temporal, llm."),
    threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch default)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="FSDP instead of DDP (under torchrun)."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at",
                                          help="Stop after this step, keeping the --steps LR schedule."),
) -> None:
    """Train VideoMolmo (answer-token CE, AdamW, warmup + cosine, resumable checkpoints).

    Multi-process: `torchrun --nproc-per-node N -m videomolmo.cli train ...` (gloo on CPU, nccl on GPU).
    """
    import torch

    from videomolmo.training.trainer import TrainConfig, train

    if threads > 0:
        torch.set_num_threads(threads)
    overrides = {k: v for k, v in dict(
        steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr_llm=lr_llm,
        lr_vision=lr_vision, lr_connector=lr_connector, lr_temporal=lr_temporal,
        precision=precision, curriculum=curriculum, seed=seed, checkpoint_every=checkpoint_every,
        eval_every=eval_every, grounding_weight=grounding_weight,
        grounding_layer=grounding_layer, motion_weight=motion_weight,
        attribute_weight=attribute_weight, attribute_at=attribute_at,
        count_weight=count_weight, image_size=image_size).items() if v is not None}
    if freeze is not None:
        overrides["freeze"] = tuple(p.strip() for p in freeze.split(",") if p.strip())
    overrides["data"] = data
    overrides["data_split"] = split
    if init is not None:
        overrides["init"] = str(init)
    if init_vision is not None:
        overrides["init_vision"] = str(init_vision)
    if fsdp:
        overrides["fsdp"] = True
    cfg = TrainConfig.from_name(preset, **overrides)
    if temporal is not None:
        from videomolmo.model.temporal import temporal_class

        temporal_class(temporal)  # one-line error listing the registered names, before any work
        cfg.model_overrides = {**cfg.model_overrides, "temporal": temporal}
    if point_head is not None:
        from videomolmo.model.point_head import POINT_HEADS

        if point_head not in POINT_HEADS:
            raise ConfigError(f"--point-head must be one of {', '.join(POINT_HEADS)}, got {point_head!r}")
        cfg.model_overrides = {**cfg.model_overrides, "point_head": point_head}
    if point_head_layer is not None:
        cfg.model_overrides = {**cfg.model_overrides, "point_head_layer": point_head_layer}
    if curriculum is not None:
        Curriculum.from_name(curriculum)  # one-line error for a bad name before any work
    if data != "synth" and not Path(data).exists():
        raise DatasetError(f"{data}: dataset folder not found")
    _check_run_dir(out, resume)
    if init is not None:
        _check_weights(init)
    if init_vision is not None:
        check_safetensors(init_vision)

    def show(row: dict) -> None:
        if "eval" in row:
            e = row["eval"]
            kinds = " ".join(f"{k} {v['f1']:.2f}" for k, v in e.items() if isinstance(v, dict))
            console.print(f"step {row['step']}: held-out F1 {e['f1']:.3f} ({kinds})")

    import warnings

    from videomolmo.training.lineage import DataReplayWarning, replay_note

    note = None if resume else replay_note(cfg)
    if note:
        err_console.print(Text.assemble(("warning:", "bold yellow"), " ", note), highlight=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataReplayWarning)  # said above, once
        result = train(cfg, out, resume=resume, on_log=show, stop_at=stop_at)
    console.print(f"saved {result.final} (step {result.step})")


@command("pretrain-vision")
def pretrain_vision_cmd(
    out: Path = typer.Option(..., "--out", help="Run folder."),
    preset: str = typer.Option("tiny", "--preset", help="tiny | tiny-shape | tiny-shape2 | test | test-shape | test-shape2"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    resume: bool = typer.Option(True, "--resume/--no-resume"),
    export_only: bool = typer.Option(False, "--export", help="Only write vision.safetensors from the latest checkpoint."),
    evaluate: Optional[int] = typer.Option(
        None, "--evaluate", help="Only measure the latest checkpoint's per-patch shape accuracy on N test clips."),
    init: Optional[Path] = typer.Option(
        None, "--init", help="Start the ViT from an earlier vision.safetensors or a model file (its ViT)."),
    sincos: Optional[bool] = typer.Option(None, "--sincos/--no-sincos",
                                          help="Reset position embeddings to 2-D sin-cos at the start "
                                               "(default: the preset's)."),
    absolute: Optional[bool] = typer.Option(None, "--absolute/--no-absolute",
                                            help="Train the absolute-centroid head too (default: the preset's)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    threads: int = typer.Option(0, "--threads", help="torch threads (0 = torch default)."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at",
                                          help="Stop after this step, keeping the --steps LR schedule."),
) -> None:
    """Dense per-patch pretraining of the tiny ViT on synthetic clips (the stand-in for CLIP)."""
    from videomolmo.training.pretrain_vision import VisionPretrainConfig, export_vision, run_pretraining

    if export_only:
        console.print(f"wrote {export_vision(out)}")
        return
    if evaluate is not None:
        import json

        from videomolmo.training.pretrain_vision import evaluate_run

        if threads > 0:
            import torch
            torch.set_num_threads(threads)
        console.print(json.dumps(evaluate_run(out, clips=evaluate)))
        return
    cfg = VisionPretrainConfig.from_name(preset)
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {steps}")
        cfg.steps = steps
    ensure_writable_dir(out)
    if init is not None:
        check_safetensors(init)
        cfg.init = str(init)
    if resume:
        _check_latest_checkpoint(out)
    if sincos is not None:
        cfg.sincos_positions = sincos
    if absolute is not None:
        cfg.absolute_target = absolute
    if seed is not None:
        cfg.seed = seed
    if threads > 0:
        import torch
        torch.set_num_threads(threads)
    console.print(f"wrote {run_pretraining(cfg, out, resume=resume, stop_at=stop_at)}")
