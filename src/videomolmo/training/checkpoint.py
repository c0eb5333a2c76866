"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `<run>/checkpoints/step-XXXXXXX/` holding

    model.safetensors       the trainable module's state dict
    optimizer.safetensors   every tensor of `optimizer.state_dict()["state"]`, flattened
    rng.safetensors         torch CPU (and CUDA) generator states
    state.json              step, optimizer param groups and scalar state, numpy RNG, extras

It is written to a temporary folder and renamed into place, and `<run>/checkpoints/latest`
(a one-line text file) is replaced atomically afterwards, so a crash at any point leaves the
previous checkpoint intact and resumable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from videomolmo.files import atomic_write_json, atomic_write_text
from videomolmo.errors import CheckpointError


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into named tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars,
            "pids": [int(p) for p in state_dict["state"]]}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {pid: {} for pid in meta["pids"]}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state[int(pid)][key] = value
    for pid, kv in meta["scalars"].items():
        state[int(pid)].update(kv)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch_cuda_{i}"] = s
    return out


def save_checkpoint(run_dir: str | Path, step: int, model_state: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer | None = None,
                    np_rng: np.random.Generator | None = None,
                    extra: dict | None = None, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and point `latest` at it; keep the newest `keep`."""
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=ckdir, prefix=f".step-{step:07d}."))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()},
                  str(tmp / "model.safetensors"))
        state: dict[str, Any] = {"step": step, "extra": extra or {}}
        if optimizer is not None:
            tensors, meta = flatten_optimizer_state(optimizer.state_dict())
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            state["optimizer"] = meta
        save_file(_rng_tensors(), str(tmp / "rng.safetensors"))
        if np_rng is not None:
            state["numpy_rng"] = np_rng.bit_generator.state
        atomic_write_json(tmp / "state.json", state, indent=None)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckdir / "latest", final.name + "\n")
    old = sorted(p for p in ckdir.glob("step-*") if p.is_dir())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder `latest` points at, or None when the run has no checkpoint yet."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise CheckpointError(f"{pointer}: points at {path.name}, which is missing or incomplete")
    return path


def load_checkpoint(path: str | Path, optimizer: torch.optim.Optimizer | None = None,
                    np_rng: np.random.Generator | None = None,
                    restore_rng: bool = True) -> tuple[int, dict[str, torch.Tensor], dict]:
    """Read a checkpoint folder; restores optimizer and RNG states in place.

    Returns (step, model_state, extra)."""
    path = Path(path)
    for name in ("model.safetensors", "state.json"):
        if not (path / name).exists():
            raise CheckpointError(f"{path}: not a training checkpoint (no {name})")
    try:
        state = json.loads((path / "state.json").read_text())
        model_state = load_file(str(path / "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if optimizer is not None and "optimizer" in state:
        tensors = load_file(str(path / "optimizer.safetensors"))
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, state["optimizer"]))
    if restore_rng and (path / "rng.safetensors").exists():
        rng = load_file(str(path / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if np_rng is not None and "numpy_rng" in state:
        np_rng.bit_generator.state = state["numpy_rng"]
    return int(state["step"]), model_state, state.get("extra", {})
