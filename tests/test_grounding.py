"""The auxiliary grounding loss: patch targets, the head, and training / resuming with it."""

import json

import numpy as np
import pytest
import torch

from videomolmo.errors import ConfigError
from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer, collate
from videomolmo.training.export import export_bundle
from videomolmo.model.point_head import PatchHead, resolve_layer
from videomolmo.training.grounding import HEAD_PREFIX, TrainModule
from videomolmo.training.trainer import TrainConfig, train

from conftest import FLAT

torch.set_num_threads(1)


def _flat_processor():
    cfg = ModelConfig.from_name("test-tiny", **FLAT)
    return cfg, Processor(cfg, build_tokenizer(cfg))


def test_patch_targets_follow_the_token_layout():
    cfg, proc = _flat_processor()
    mask = np.zeros((56, 56), dtype=bool)
    mask[14:28, 42:56] = True  # patch row 1, column 3
    t = proc.patch_targets(mask)
    assert t.shape == (1, 16)
    expect = np.zeros(16, dtype=np.float32)
    expect[1 * 4 + 3] = 1.0
    np.testing.assert_allclose(t[0], expect, atol=1e-6)
    # A wide frame is letterboxed exactly like the image: a full mask covers what image_masks
    # calls real pixels.
    wide = np.ones((28, 56), dtype=bool)
    img = proc.encode_image(np.zeros((28, 56, 3), dtype=np.uint8))
    np.testing.assert_allclose(proc.patch_targets(wide), img.image_masks, atol=1e-6)
    assert img.patch_idx.shape == t.shape


def test_patch_targets_refuse_pooled_or_multicrop_layouts():
    cfg = ModelConfig.from_name("test-tiny")
    proc = Processor(cfg, build_tokenizer(cfg))
    with pytest.raises(ConfigError, match="patch targets"):
        proc.patch_targets(np.zeros((56, 56), dtype=bool))
    with pytest.raises(ConfigError, match="one token per patch"):
        TrainModule(VideoMolmo(cfg), weight=1.0)


def test_head_reads_the_image_tokens_in_patch_order():
    head = PatchHead(4)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.weight[0, 0] = 1.0
        head.proj.bias.zero_()
    hidden = torch.full((1, 10, 4), 0.0)
    idx = torch.tensor([[[2, 3, 5, 7]]])
    hidden[0, 5, 0], hidden[0, [2, 3, 7], 0] = 20.0, -20.0
    right = torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])
    wrong = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    assert head.loss(hidden, idx, right) < 1e-6 < head.loss(hidden, idx, wrong)
    # Dropped tokens (-100) are ignored.
    idx2 = torch.tensor([[[2, 3, 5, -100]]])
    assert head.loss(hidden, idx2, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])) < 1e-6


def test_resolve_layer():
    assert resolve_layer(0, 4) == 2 and resolve_layer(-1, 4) == 4 and resolve_layer(3, 4) == 3
    with pytest.raises(ConfigError):
        resolve_layer(5, 4)


def test_the_grounding_loss_trains_the_head_and_the_model():
    cfg, proc = _flat_processor()
    torch.manual_seed(0)
    module = TrainModule(VideoMolmo(cfg), weight=1.0)
    frame = np.zeros((56, 56, 3), dtype=np.uint8)
    mask = np.zeros((56, 56), dtype=bool)
    mask[:28, :28] = True
    frame[mask] = 255
    feats = proc(frame, [], "the white square", " x")
    batch = collate([feats], build_tokenizer(cfg).pad_token_id, padding_side="right")
    batch["patch_targets"] = torch.from_numpy(proc.patch_targets(mask))[None]
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        total, ans, aux = module(dict(batch))
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(aux.detach()))
        assert torch.allclose(total, ans + aux)
    assert losses[-1] < 0.5 * losses[0]


def test_train_with_grounding_resumes_exactly_and_ships_without_the_head(tmp_path):
    def cfg(steps):
        return TrainConfig.from_name("test", steps=steps, checkpoint_every=2, model_overrides=FLAT,
                                     grounding_weight=1.0)

    full = train(cfg(3), tmp_path / "a", progress=False)
    train(cfg(2), tmp_path / "b", progress=False)
    resumed = train(cfg(3), tmp_path / "b", resume=True, progress=False)
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, atol=1e-6), k
    from safetensors.torch import load_file

    ck = sorted((tmp_path / "b" / "checkpoints").glob("step-*"))[-1]
    assert any(k.startswith(HEAD_PREFIX) for k in load_file(str(ck / "model.safetensors")))
    shipped = load_file(str(full.final / "model.safetensors"))
    assert not any(k.startswith(HEAD_PREFIX) for k in shipped)
    rows = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert all(r["grounding_loss"] > 0 and r["answer_loss"] > 0 for r in rows)
    from videomolmo.model.checkpoint import from_pretrained

    assert from_pretrained(full.final).config.crop_mode == "resize"


def test_export_bundle_from_a_grounding_run_drops_the_head(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from videomolmo import bundled

    train(TrainConfig.from_name("test", steps=2, checkpoint_every=2, model_overrides=FLAT,
                                grounding_weight=1.0), tmp_path / "run", progress=False)
    weights = export_bundle(tmp_path / "run", tmp_path / "assets", {"source": "test"})
    assert not any(k.startswith(HEAD_PREFIX) for k in load_file(str(weights)))
    monkeypatch.setattr(bundled, "assets_dir", lambda: tmp_path / "assets")
    model, _ = bundled.load_default()
    assert bundled.bundled_info()["training"]["step"] == 2 and model.config.crop_mode == "resize"


def test_dataset_examples_carry_target_masks_only_when_asked(tmp_path):
    from videomolmo.data import load_dataset
    from videomolmo.synth import SynthConfig, write_dataset
    from videomolmo.training.examples import examples_from_dataset

    ds = load_dataset(write_dataset(tmp_path / "ds", 1, seed=3, split="train", config=SynthConfig(frames=3)))
    plain = list(examples_from_dataset(ds, context=2))
    assert plain and all(e.target_mask is None for e in plain)
    with_masks = list(examples_from_dataset(ds, context=2, target_masks=True))
    i = 0
    for s in ds:
        for t in range(len(s)):
            np.testing.assert_array_equal(with_masks[i].target_mask, s.gt_mask(t))
            assert with_masks[i].answer == plain[i].answer
            i += 1
    # ... and training from the folder feeds them to the grounding loss.
    res = train(TrainConfig.from_name("test", steps=1, data=str(ds.root), model_overrides=FLAT,
                                      grounding_weight=1.0), tmp_path / "run", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert res.step == 1 and rows[-1]["grounding_loss"] > 0
