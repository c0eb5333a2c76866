"""Ship a trained model as the bundled default: `python -m videomolmo.training.export RUN [OUT]`.

Lives in `training/` because it reads training runs (checkpoints, the training-only grounding
head it drops); inference (`videomolmo.bundled`) never imports training code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from videomolmo.bundled import CONFIG, WEIGHTS, assets_dir
from videomolmo.errors import CheckpointError
from videomolmo.files import atomic_path, atomic_write_text


def export_bundle(model_dir: str | Path, out_dir: str | Path, training: dict | None = None) -> Path:
    """Copy trained weights into the asset layout (fp32 weights + config JSON with a
    `training` record). `model_dir` is a `save_pretrained` folder, or a training run folder
    (its latest checkpoint is used). See `assets/TRAINING.md`."""
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
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
        os.chmod(tmp, 0o644)  # package data must be readable by every user
    info = {"format": "videomolmo-bundled", "model": cfg.to_dict(), "training": training or {}}
    atomic_write_text(out_dir / CONFIG, json.dumps(info, indent=1, sort_keys=True))
    os.chmod(out_dir / CONFIG, 0o644)
    return out_dir / WEIGHTS


if __name__ == "__main__":  # pragma: no cover
    import sys

    src = sys.argv[1]
    dst = sys.argv[2] if len(sys.argv) > 2 else str(assets_dir())
    print(export_bundle(src, dst, {"source": src}))
