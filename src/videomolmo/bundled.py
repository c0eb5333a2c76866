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


def export_bundle(model_dir: str | Path, out_dir: str | Path, training: dict | None = None) -> Path:
    """Copy trained weights into the asset layout (fp32 weights + config JSON with a
    `training` record). `model_dir` is a `save_pretrained` folder, or a training run folder
    (its latest checkpoint is used). See `assets/TRAINING.md`."""
    import os

    from safetensors.torch import load_file, save_file

    from videomolmo.model import ModelConfig
    from videomolmo.model.checkpoint import read_config
    from videomolmo.training.checkpoint import latest_checkpoint
    from videomolmo.training.grounding import split_head_state

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if (model_dir / "config.json").is_file():
        cfg = read_config(model_dir)
        state = load_file(str(model_dir / "model.safetensors"))
    else:
        ck = latest_checkpoint(model_dir)
        if ck is None or not (model_dir / "model_config.json").is_file():
            raise CheckpointError(f"{model_dir}: neither a saved model nor a training run with a checkpoint")
        cfg = ModelConfig.from_dict(json.loads((model_dir / "model_config.json").read_text()))
        # Training-only tensors (the grounding head) are not part of the model.
        state, _ = split_head_state(load_file(str(ck / "model.safetensors")))
        step = json.loads((ck / "state.json").read_text())
        training = {**(training or {}), "checkpoint": ck.name, "step": step["step"],
                    "cpu_s": round(step.get("extra", {}).get("cpu_s", 0.0), 1),
                    "examples": step.get("extra", {}).get("examples")}
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{WEIGHTS}.tmp"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)  # package data must be readable by every user
    os.replace(tmp, out_dir / WEIGHTS)
    info = {"format": "videomolmo-bundled", "model": cfg.to_dict(), "training": training or {}}
    (out_dir / f".{CONFIG}.tmp").write_text(json.dumps(info, indent=1, sort_keys=True))
    os.replace(out_dir / f".{CONFIG}.tmp", out_dir / CONFIG)
    return out_dir / WEIGHTS


if __name__ == "__main__":  # pragma: no cover - `python -m videomolmo.bundled RUN [OUT]`
    import sys

    src = sys.argv[1]
    dst = sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).parent / "assets")
    print(export_bundle(src, dst, {"source": src}))
