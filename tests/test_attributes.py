"""The training-only attribute loss: per-patch shape / motion targets, the head at the grounding
head's layer, resumable, and kept out of shipped files."""

import json

import pytest
import torch

from videomolmo.errors import ConfigError
from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer
from videomolmo.synth import MOTIONS, SHAPES, SynthConfig, clip_rng, generate_clip
from videomolmo.training.attributes import attribute_targets
from videomolmo.training.examples import example_from_clip
from videomolmo.training.grounding import ATTRIBUTE_HEAD_PREFIX, TrainModule
from videomolmo.training.trainer import TrainConfig, train

from conftest import FLAT

torch.set_num_threads(1)


def test_attribute_targets_name_the_owning_sprites_shape_and_motion():
    cfg = ModelConfig.from_name("tiny")
    proc = Processor(cfg, build_tokenizer(cfg))
    clip = generate_clip(clip_rng(0, "test", 4), SynthConfig(frames=5, enter_leave_prob=0.0))
    tgt = attribute_targets(proc, [example_from_clip(clip, 0, 4)], 1, 64)[0, :, 0].reshape(2, 8, 8)
    checked = 0
    for k, sp in enumerate(clip.sprites):
        if clip.masks[k, 4].sum() < 120:
            continue
        x, y = clip.points[k][4]
        if all(clip.masks[j, 4, int(y), int(x)] == (j == k) for j in range(len(clip.sprites))):
            assert SHAPES[tgt[0, int(y) // 14, int(x) // 14]] == sp.shape
            assert MOTIONS[tgt[1, int(y) // 14, int(x) // 14]] == sp.motion
            checked += 1
    assert checked > 0
    background = ~proc.patch_targets(clip.masks[:, 4].any(0))[0].reshape(8, 8).astype(bool)
    assert (tgt[:, background] == -1).all()


def test_attribute_loss_needs_the_grounding_layer():
    with pytest.raises(ConfigError, match="attribute loss"):
        TrainModule(VideoMolmo(ModelConfig.from_name("test-tiny", **FLAT)), weight=0.0, attribute_weight=1.0)


def test_attribute_loss_trains_resumes_and_ships_without_its_head(tmp_path):
    from safetensors.torch import load_file

    def cfg(steps):
        return TrainConfig.from_name("test", steps=steps, checkpoint_every=2, model_overrides=FLAT,
                                     grounding_weight=1.0, attribute_weight=1.0)

    full = train(cfg(3), tmp_path / "a", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(r["attribute_loss"] > 0 and 0 <= r["attribute_shape_acc"] <= 1 for r in rows)
    ck = sorted((tmp_path / "a" / "checkpoints").glob("step-*"))[-1]
    assert any(k.startswith(ATTRIBUTE_HEAD_PREFIX) for k in load_file(str(ck / "model.safetensors")))
    assert not any(k.startswith("_") for k in load_file(str(full.final / "model.safetensors")))
    # The loss reaches the model: a run without it ends elsewhere.
    plain = train(TrainConfig.from_name("test", steps=3, checkpoint_every=2, model_overrides=FLAT,
                                        grounding_weight=1.0), tmp_path / "p", progress=False)
    assert not all(torch.equal(v, plain.model.state_dict()[k]) for k, v in full.model.state_dict().items())
    train(cfg(2), tmp_path / "b", progress=False)
    resumed = train(cfg(3), tmp_path / "b", resume=True, progress=False)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k


def test_attribute_loss_at_the_decoders_input_reads_the_connectors_tokens(tmp_path):
    with pytest.raises(ConfigError, match="attribute-at"):
        TrainConfig.from_name("test", attribute_at="middle")
    cfg = ModelConfig.from_name("test-tiny", **FLAT)
    model = VideoMolmo(cfg)
    module = TrainModule(model, weight=1.0, attribute_weight=1.0, attribute_at="input")
    seen = {}
    model.llm.register_forward_pre_hook(lambda m, a, k: seen.update(embeds=k["inputs_embeds"]), with_kwargs=True)
    train_cfg = TrainConfig.from_name("test", steps=2, checkpoint_every=2, model_overrides=FLAT,
                                      grounding_weight=1.0, attribute_weight=1.0, attribute_at="input")
    res = train(train_cfg, tmp_path / "i", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "i" / "log.jsonl").read_text().splitlines()]
    assert all(r["attribute_loss"] > 0 for r in rows)
    assert not any(k.startswith("_") for k in res.model.state_dict())
    # The tap hands over exactly what the decoder was given.
    from videomolmo.model import collate
    from videomolmo.training.examples import SynthStream

    proc = Processor(cfg, build_tokenizer(cfg))
    exs = SynthStream(0, 1, context=cfg.context_frames, size=cfg.vision.image_size).batch(2, 0)
    batch = collate([proc(e.frame, e.context, e.query, e.answer) for e in exs], proc.tokenizer.pad_token_id)
    model(**batch)
    assert torch.equal(module._input_tap.take(), seen["embeds"])
