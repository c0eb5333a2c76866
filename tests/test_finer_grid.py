"""A finer patch grid over the same synthetic clips: `ModelConfig.synth_size`, position-embedding
interpolation, and `train --image-size` from a model trained at another size."""

import json

import numpy as np
import pytest
import torch

from videomolmo.errors import ConfigError
from videomolmo.model import ModelConfig
from videomolmo.model.checkpoint import from_pretrained
from videomolmo.model.vision import resize_position_embedding
from videomolmo.training.trainer import TrainConfig, train

torch.set_num_threads(1)


def test_clip_size_is_the_vits_size_unless_synth_size_says_otherwise():
    cfg = ModelConfig.from_name("tiny")
    assert cfg.synth_size is None and cfg.clip_size == 112
    finer = cfg.replace(vision={**cfg.vision.__dict__, "image_size": 168}, synth_size=112)
    assert finer.vision.grid == 12 and finer.clip_size == 112
    assert ModelConfig.from_dict(json.loads(finer.to_json())).clip_size == 112
    with pytest.raises(ConfigError, match="synth_size"):
        cfg.replace(synth_size=8)


def test_resized_position_embedding_keeps_the_class_token_and_a_smooth_grid():
    g, d = 4, 3
    yy, xx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    grid = np.stack([xx, yy, xx + yy], -1).reshape(g * g, d).astype(np.float32)
    weight = torch.cat([torch.full((1, d), 7.0), torch.from_numpy(grid)])
    assert torch.equal(resize_position_embedding(weight, 1 + g * g), weight)
    out = resize_position_embedding(weight, 1 + 8 * 8)
    assert out.shape == (65, d) and torch.equal(out[0], weight[0])
    fine = out[1:].reshape(8, 8, d)
    # The x channel rises left to right and is constant down a column, as in the source grid.
    assert (fine[:, 1:, 0] >= fine[:, :-1, 0] - 1e-5).all()
    assert torch.allclose(fine[:, :, 0], fine[:1, :, 0].expand(8, 8), atol=1e-4)
    assert float(fine[..., 0].min()) < 0.5 < 2.5 < float(fine[..., 0].max())
    with pytest.raises(ValueError, match="square"):
        resize_position_embedding(weight, 20)


def test_training_at_a_finer_grid_from_a_coarser_model(tmp_path):
    first = train(TrainConfig.from_name("test", steps=1, checkpoint_every=1), tmp_path / "a", progress=False)
    size = first.model.config.vision.image_size
    finer = train(TrainConfig.from_name("test", steps=1, checkpoint_every=1, seed=1, init=str(first.final),
                                        image_size=size + 28), tmp_path / "b", progress=False)
    cfg = finer.model.config
    assert cfg.vision.image_size == size + 28 and cfg.synth_size == size and cfg.clip_size == size
    saved = from_pretrained(finer.final)
    assert saved.config.vision.grid == cfg.vision.grid and saved.config.clip_size == size
    key = "vision.clip.embeddings.position_embedding.weight"
    old = first.model.state_dict()[key]
    new = saved.state_dict()[key]
    assert new.shape[0] == 1 + cfg.vision.grid ** 2 and old.shape[0] < new.shape[0]
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["image_size"] == size + 28
