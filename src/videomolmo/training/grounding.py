"""Auxiliary grounding loss for the from-scratch presets.

The answer-token loss alone gives a tiny decoder one weak signal per example (a few
coordinate digits) for two jobs at once: find the patches the query refers to, and read their
position out as digits. Trained from scratch on CPU, our tiny model learned the text format and
then stalled for 5,000 steps without matching queries to sprites (TRAINING.md). This loss
supervises the first job densely: a linear head (`model/point_head.py`'s `PatchHead`) on decoder layer `layer`'s hidden state at
every image token (which, with the query before the image, can attend to the query) predicts
the fraction of its patch covered by the referred objects (binary cross-entropy on soft
targets; all zeros for an absent object). The answer tokens are still trained by the usual
cross-entropy; the head is dropped when the model is saved, so the shipped model is a plain
VideoMolmo and inference is unchanged -- unless the model is built with `point_head="patch"`:
then this loss trains the model's own head, which ships and points.

It needs one token per patch (`crop_mode="resize"`, no pooling: the tiny presets).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from videomolmo.errors import ConfigError
from videomolmo.model.point_head import PatchHead, resolve_layer

HEAD_PREFIX = "_grounding_head."
MOTION_HEAD_PREFIX = "_motion_head."  # `motion.py`'s head
ATTRIBUTE_HEAD_PREFIX = "_attribute_head."  # `attributes.py`'s head
# Every training-only head's prefix: `split_head_state` keeps them out of exported weights.
TRAINING_ONLY_PREFIXES = (HEAD_PREFIX, MOTION_HEAD_PREFIX, ATTRIBUTE_HEAD_PREFIX)


class TrainModule(nn.Module):
    """The model plus, optionally, the grounding head, the motion head (`motion.py`) and the
    attribute head (`attributes.py`): one module for DDP and the optimizer.

    `forward(batch)` returns (total loss, answer loss, grounding loss or None); the motion
    loss and accuracy of the last call are in `last_motion`, the attribute loss and its shape
    and motion accuracies in `last_attributes`."""

    def __init__(self, model: nn.Module, weight: float = 0.0, layer: int = 0,
                 motion_weight: float = 0.0, attribute_weight: float = 0.0, attribute_at: str = "head") -> None:
        super().__init__()
        self.model = model
        self.weight = float(weight)
        self.motion_weight = float(motion_weight)
        self.attribute_weight = float(attribute_weight)
        self.motion_head, self._tap, self.attribute_head = None, None, None
        self.last_motion: tuple[float, float] | None = None
        self.last_attributes: tuple[float, float, float] | None = None
        if self.motion_weight > 0:
            from videomolmo.training.motion import MotionHead, TemporalTap

            self._tap = TemporalTap(model)
            self.motion_head = MotionHead(model.config.vision.feature_dim)
        # A model that points by patch selection trains its own head with this loss.
        self.own_head = getattr(model, "point_head", None) is not None
        if self.own_head and self.weight <= 0:
            raise ConfigError(f"train: model {model.config.name!r} points with a patch head; it is trained by the "
                              "grounding loss, so --grounding-weight must be > 0")
        if self.own_head:
            self.layer = resolve_layer(model.config.point_head_layer, model.config.llm.layers)
            self.head = model.point_head
        elif self.weight > 0:
            cfg = model.config
            if cfg.crop_mode != "resize" or cfg.pool != "none":
                raise ConfigError(f"train: the grounding loss needs one token per patch; model "
                                  f"{cfg.name!r} crops or pools (crop_mode={cfg.crop_mode!r}, pool={cfg.pool!r})")
            self.layer = resolve_layer(layer, cfg.llm.layers)
            self.head = PatchHead(cfg.llm.hidden)
        else:
            self.layer, self.head = None, None
        if self.attribute_weight > 0:
            if self.head is None:
                raise ConfigError("train: the attribute loss reads the grounding head's decoder layer; "
                                  "it needs --grounding-weight > 0")
            from videomolmo.training.attributes import AttributeHead, InputTap, check_attribute_at

            self.attribute_head = AttributeHead(model.config.llm.hidden)
            self._input_tap = InputTap(model) if check_attribute_at(attribute_at) == "input" else None

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        targets = batch.pop("patch_targets", None)
        motion = batch.pop("motion_targets", None)
        attributes = batch.pop("attribute_targets", None)
        label_weights = batch.pop("label_weights", None)
        out = self.model(**batch, hidden_layer=self.layer)
        total = out.loss
        if label_weights is not None:
            from videomolmo.training.count_decisions import weighted_answer_loss

            # The plain answer loss is still what is returned and logged, so runs compare.
            total = weighted_answer_loss(out.logits, batch["labels"], label_weights)
        if self.motion_head is not None:
            if motion is None:
                raise ConfigError("train: the motion loss needs motion targets for every example")
            B, n = batch["image_input_idx"].shape[:2]
            ml, acc = self.motion_head.loss(self._tap.take(B, n), motion)
            self.last_motion = (float(ml.detach()), acc)
            total = total + self.motion_weight * ml
        if self.head is None:
            return total, out.loss, None
        if targets is None:
            raise ConfigError("train: the grounding loss needs patch targets for every example")
        aux = self.head.loss(out.hidden, batch["image_input_idx"], targets)
        if self.attribute_head is not None:
            if attributes is None:
                raise ConfigError("train: the attribute loss needs shape and motion targets for every example")
            states = out.hidden if self._input_tap is None else self._input_tap.take()
            al, shape_acc, motion_acc = self.attribute_head.loss(states, batch["image_input_idx"],
                                                                 attributes[:, 0], attributes[:, 1])
            self.last_attributes = (float(al.detach()), shape_acc, motion_acc)
            total = total + self.attribute_weight * al
        return total + self.weight * aux, out.loss, aux

    def _training_only_heads(self) -> list[tuple[str, nn.Module, str]]:
        """(checkpoint prefix, module, name) of every training-only head this module has (the
        model's own patch head is part of the model and saved with it)."""
        heads = [(MOTION_HEAD_PREFIX, self.motion_head, "motion"),
                 (ATTRIBUTE_HEAD_PREFIX, self.attribute_head, "attribute"),
                 (HEAD_PREFIX, None if self.own_head else self.head, "grounding")]
        return [(p, m, name) for p, m, name in heads if m is not None]

    def head_state(self) -> dict[str, torch.Tensor]:
        return {prefix + k: v for prefix, module, _ in self._training_only_heads()
                for k, v in module.state_dict().items()}

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        for prefix, module, name in self._training_only_heads():
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not own:
                raise ConfigError(f"train: the checkpoint has no {name} head to resume")
            module.load_state_dict(own)


def split_head_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(model state, training-only heads' state) from a checkpoint's tensors."""
    model = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    head = {k: v for k, v in state.items() if k.startswith(TRAINING_ONLY_PREFIXES)}
    return model, head


def stack_targets(targets: list[np.ndarray | None], n_crops: int, tokens: int) -> torch.Tensor:
    """Per-example (n, T) patch targets -> (B, n_crops, T); raises if one is missing."""
    if any(t is None for t in targets):
        raise ConfigError("train: the grounding loss needs target masks; this data source has none")
    out = torch.zeros((len(targets), n_crops, tokens))
    for b, t in enumerate(targets):
        out[b, :t.shape[0]] = torch.from_numpy(t)
    return out
