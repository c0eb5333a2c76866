"""`videomolmo info`: a model preset's (or checkpoint's) layout and parameter counts."""

from __future__ import annotations

from typing import Optional

import typer

from videomolmo.cli.app import command, console
from videomolmo.fusion import STRATEGY_DESCRIPTIONS, strategy_names
from videomolmo.pointers import POINTERS, pointer_names
from videomolmo.segmentation.registry import BACKENDS, backend_names


@command("info")
def info(
    preset: str = typer.Option("tiny", "--preset", help="Model preset: molmo-7b-d, videomolmo-7b, tiny, test-tiny."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint",
                                             help="A saved videomolmo model folder (reads its config.json), "
                                                  "or 'bundled' for the shipped CPU model."),
    registries: bool = typer.Option(False, "--registries",
                                    help="List the registered pointers, temporal modules, mask backends and fusion strategies."),
) -> None:
    """Build the model on the meta device (no memory) and print parameters per component."""
    import torch
    from rich.table import Table

    if registries:
        _print_registries()
        return

    from videomolmo.model import ModelConfig, VideoMolmo
    from videomolmo.model.checkpoint import read_config

    trained = None
    if checkpoint == "bundled":
        # The shipped file differs from the `tiny` preset (e.g. its patch-selection head).
        from videomolmo.bundled import bundled_info

        meta = bundled_info()
        cfg, trained = ModelConfig.from_dict(meta["model"]), meta.get("training")
    else:
        cfg = read_config(checkpoint) if checkpoint else ModelConfig.from_name(preset)
    with torch.device("meta"):
        model = VideoMolmo(cfg)
    counts = model.parameter_counts()
    table = Table(title=f"VideoMolmo '{cfg.name}'")
    table.add_column("component")
    table.add_column("parameters", justify="right")
    table.add_column("", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}", _human(n))
    console.print(table)
    v, c = cfg.vision, cfg.llm
    pointing = "text coordinates"
    if cfg.point_head == "patch":
        from videomolmo.model.point_head import resolve_layer

        pointing = f"patch selection (head on decoder layer {resolve_layer(cfg.point_head_layer, c.layers)})"
    console.print(
        f"vision: CLIP ViT {v.layers}x{v.width} patch {v.patch_size} crop {v.image_size}px, "
        f"features from layers {list(v.feature_layers)} -> {v.feature_dim} dims\n"
        f"crops: {cfg.crop_mode} (max {cfg.max_crops}, margins {list(cfg.overlap_margins)}), "
        f"{cfg.tokens_per_crop} image tokens per crop, pooling {cfg.pool}\n"
        f"temporal: {cfg.temporal} over l={cfg.context_frames} frames "
        f"({cfg.temporal_heads}x{cfg.temporal_head_dim} heads, init {cfg.temporal_init})\n"
        f"LLM: Qwen2 {c.layers}x{c.hidden} ({c.heads} heads, {c.kv_heads} KV), vocab {c.vocab_size} "
        f"+ {c.additional_vocab_size} image tokens; tokenizer {cfg.tokenizer}\n"
        f"pointing: {pointing}\n"
        f"size: {counts['total'] * 4 / 1e6:,.1f} MB fp32, {counts['total'] * 2 / 1e6:,.1f} MB bf16",
        highlight=False,
    )
    if trained:
        console.print(f"trained: {trained.get('source', '?')}; step {trained.get('step', '?')}, "
                      f"{trained.get('cpu_s', '?')} CPU s in its last stage (assets/TRAINING.md has every stage)",
                      highlight=False)


def _print_registries() -> None:
    from videomolmo.model.temporal import TEMPORAL_MODULES
    def doc(obj) -> str:
        return (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""

    sections = {
        "pointers (--pointer)": [(n, doc(POINTERS[n])) for n in pointer_names()],
        "temporal modules (train --temporal)": [(n, doc(TEMPORAL_MODULES[n])) for n in sorted(TEMPORAL_MODULES)],
        "mask backends (--mask-backend)": [(n, BACKENDS[n].description) for n in backend_names()],
        "fusion strategies (--fusion)": [(n, STRATEGY_DESCRIPTIONS.get(n, "")) for n in strategy_names()],
    }
    for title, rows in sections.items():
        console.print(title, markup=False, highlight=False)
        for name, text in rows:
            console.print(f"  {name:<18} {text}", markup=False, highlight=False, soft_wrap=True)


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)
