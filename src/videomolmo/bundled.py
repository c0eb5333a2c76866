"""The bundled CPU model: our own small VideoMolmo, shipped inside the package.

`load_default()` reads `videomolmo/assets/tiny-videomolmo.safetensors` and its config JSON from
the installed package (no network, no cache folder). `assets/TRAINING.md` records the exact
commands, configs, steps and CPU time that produced the file, so it can be reproduced.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from videomolmo.errors import CheckpointError

WEIGHTS = "tiny-videomolmo.safetensors"
CONFIG = "tiny-videomolmo.json"


def assets_dir() -> Path:
    """The folder that holds the shipped weights (inside the installed package)."""
    return Path(str(resources.files("videomolmo") / "assets"))


def bundled_info() -> dict:
    """The shipped config JSON: `{"format": ..., "model": ModelConfig dict, "training": {...}}`."""
    path = assets_dir() / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: the bundled model's config is missing from the package")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def load_default(device: str = "cpu"):
    """The bundled model and its processor: `(model, processor)` (`processor.tokenizer` is the
    tokenizer). The model is in eval mode on `device`. Raises `CheckpointError` when the asset files are
    missing or do not match the config.
    """
    import torch
    from safetensors.torch import load_file

    from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer

    info = bundled_info()
    weights = assets_dir() / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: the bundled model's weights are missing from the package")
    cfg = ModelConfig.from_dict(info["model"])
    model = VideoMolmo(cfg)
    state = load_file(str(weights))
    # Stored in bf16 to halve the package size where that was needed; compute in fp32.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not match its config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    model.to(torch.device(device)).eval()
    return model, Processor(cfg, build_tokenizer(cfg))
