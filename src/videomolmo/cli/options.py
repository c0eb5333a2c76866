"""The options several commands share, with one name, one help text and one default each.

Defaults come from `videomolmo.settings.PipelineConfig`; choices from the registries (mask
backends, fusion strategies, pointers), so a new registry entry shows up in every command.
Importing this module imports neither torch nor a model.
"""

from __future__ import annotations

from typing import Any

import typer

from videomolmo.fusion import strategy_names
from videomolmo.pointers import pointer_names
from videomolmo.segmentation.registry import backend_names
from videomolmo.settings import PipelineConfig

_D = PipelineConfig()


def k() -> Any:
    return typer.Option(_D.k, "--k", help="Anchor stride: point on frames 0, k, 2k, ... (paper: 5).")


def tau() -> Any:
    return typer.Option(_D.tau, "--tau", help="Fusion IoU threshold in [0, 1]: intersect the two directions "
                                              "when they agree at least this much, else unite (paper: 0.7).")


def l() -> Any:  # noqa: E743 - the paper's name for it
    return typer.Option(_D.l, "--l", help="Context frames of the temporal module (default: the model's own, 4).")


def fusion() -> Any:
    return typer.Option(_D.fusion, "--fusion", help=f"Fusion strategy: {', '.join(strategy_names())}.")


def mask_backend() -> Any:
    return typer.Option(_D.mask_backend, "--mask-backend",
                        help=f"Mask backend: {', '.join(backend_names())} (cpu needs no downloads).")


def mask_checkpoint() -> Any:
    return typer.Option(None, "--mask-checkpoint", "--sam2",
                        help="Checkpoint folder of the mask backend (sam2: a Hugging Face format SAM2 folder). "
                             "--sam2 is a deprecated alias.")


def pointer() -> Any:
    # The pointer registry imports cv2 (the oracle) but not torch; its names are listed lazily in
    # the error message, and here from the same source.

    return typer.Option("model", "--pointer", help=f"Stage-1 pointer: {', '.join(pointer_names())}.")


def model() -> Any:
    return typer.Option(None, "--model", help="Checkpoint folder (default: the bundled CPU model).")


def preset() -> Any:
    return typer.Option(None, "--preset", help="Architecture preset when --model is an upstream Molmo/VideoMolmo "
                                               "shard folder (e.g. videomolmo-7b).")


def baseline() -> Any:
    return typer.Option(False, "--baseline",
                        help="Molmo+SAM2 baseline: same weights, temporal module off, pointing on the first frame only.")


def device() -> Any:
    return typer.Option("cpu", "--device", help="Torch device for the models (cpu, cuda, cuda:1, ...).")
