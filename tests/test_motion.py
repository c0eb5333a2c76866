"""The temporal module's direct signal: per-token motion targets, the training-only motion head,
the motion stage (frozen parts), from-scratch xavier init, and the wider-window variant."""

import json

import numpy as np
import pytest
import torch

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.model import ModelConfig, Processor, VideoMolmo, build_tokenizer
from videomolmo.model.temporal import build_temporal, from_windows, to_windows
from videomolmo.synth import MOTIONS, SynthConfig, clip_rng, generate_clip
from videomolmo.training.grounding import MOTION_HEAD_PREFIX, TrainModule
from videomolmo.training.motion import motion_masks, motion_targets
from videomolmo.training.trainer import TrainConfig, train

from conftest import FLAT

torch.set_num_threads(1)


def test_motion_targets_name_the_owning_sprites_motion():
    cfg = ModelConfig.from_name("tiny")
    proc = Processor(cfg, build_tokenizer(cfg))
    clip = generate_clip(clip_rng(0, "test", 4), SynthConfig(frames=5, enter_leave_prob=0.0))
    tgt = motion_targets(proc, motion_masks(clip, 4))[0].reshape(8, 8)
    for k, sp in enumerate(clip.sprites):
        m = clip.masks[k, 4]
        if m.sum() < 120:
            continue
        # the patch holding the sprite's visible centroid carries its motion
        x, y = clip.points[k][4]
        if all(clip.masks[j, 4, int(y), int(x)] == (j == k) for j in range(len(clip.sprites))):
            assert MOTIONS[tgt[int(y) // 14, int(x) // 14]] == sp.motion
    assert (tgt[~proc.patch_targets(clip.masks[:, 4].any(0))[0].reshape(8, 8).astype(bool)] == -1).all()


def test_motion_head_needs_a_fusing_module():
    for variant in ("none", "concat"):
        cfg = ModelConfig.from_name("test-tiny", temporal=variant, **FLAT)
        with pytest.raises(ConfigError, match="motion loss"):
            TrainModule(VideoMolmo(cfg), motion_weight=1.0)


def test_motion_stage_trains_only_temporal_and_connector_and_ships_without_the_head(tmp_path):
    from safetensors.torch import load_file

    def cfg(steps):
        return TrainConfig.from_name("test", steps=steps, checkpoint_every=2, model_overrides=FLAT,
                                     motion_weight=1.0, freeze=("vision", "llm"), curriculum="motion")

    full = train(cfg(3), tmp_path / "a", progress=False)
    torch.manual_seed(0)
    ref = VideoMolmo(ModelConfig.from_name("test-tiny", **{**FLAT, "temporal_init": "xavier"})).state_dict()
    after = full.model.state_dict()
    assert all(torch.equal(after[k], ref[k]) for k in after if k.startswith(("vision.", "llm.")))
    assert not torch.equal(after["temporal.wq.weight"], ref["temporal.wq.weight"])
    rows = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(r["motion_loss"] > 0 and 0 <= r["motion_acc"] <= 1 for r in rows)
    ck = sorted((tmp_path / "a" / "checkpoints").glob("step-*"))[-1]
    assert any(k.startswith(MOTION_HEAD_PREFIX) for k in load_file(str(ck / "model.safetensors")))
    assert not any(k.startswith("_") for k in load_file(str(full.final / "model.safetensors")))
    # Resumes exactly, motion head included.
    train(cfg(2), tmp_path / "b", progress=False)
    resumed = train(cfg(3), tmp_path / "b", resume=True, progress=False)
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k


def test_from_scratch_uses_xavier_so_q_k_v_get_gradient(tmp_path):
    res = train(TrainConfig.from_name("test", steps=1), tmp_path / "s", progress=False)
    assert json.loads((tmp_path / "s" / "model_config.json").read_text())["temporal_init"] == "xavier"
    assert res.model.temporal.wo.weight.abs().sum() > 0


def test_wider_window_attends_to_the_3x3_neighbourhood():
    cfg = ModelConfig.from_name("tiny", temporal="cross_attention_3x3", temporal_init="xavier")
    m = build_temporal(cfg)
    G, C = cfg.vision.grid, cfg.vision.feature_dim
    torch.manual_seed(0)
    x, c = torch.randn(2, 1, G, G, C), torch.randn(2, 1, G, G, C)
    c2 = c.clone()
    c2[:, :, 5, 5] += 10.0
    with torch.no_grad():
        y = from_windows(m(to_windows(x), to_windows(c)), 2, 1, G)
        y2 = from_windows(m(to_windows(x), to_windows(c2)), 2, 1, G)
    changed = (y - y2).abs().amax(dim=(0, 1, 4)) > 1e-6
    want = torch.zeros(G, G, dtype=torch.bool)
    want[4:7, 4:7] = True  # exactly the tokens whose 3x3 neighbourhood holds (5, 5)
    assert torch.equal(changed, want)
    # zero init of the output projection: the identity, as cross_attention
    z = build_temporal(ModelConfig.from_name("tiny", temporal="cross_attention_3x3", temporal_init="zero"))
    assert torch.equal(z(to_windows(x), to_windows(c)), to_windows(x))


def test_heldout_context_ablation_frames_and_rows():
    from videomolmo.evaluation import summary
    from videomolmo.training.heldout import heldout_items, item_frames, item_rows

    items = heldout_items(4, split="test", preset="motion")
    normal, repeat, shuffle = (item_frames(items, 4, m) for m in ("normal", "repeat", "shuffle"))
    for it, n, r, s in zip(items, normal, repeat, shuffle):
        cur = it.clip.frames[4]
        assert all(np.array_equal(f, cur) for f in (n[-1], r[-1], s[-1])) and len(n) == len(r) == len(s) == 5
        assert all(np.array_equal(a, b) for a, b in zip(n[:-1], it.clip.frames[:4]))
        assert all(np.array_equal(f, cur) for f in r[:-1])
        donor = next(o for o in items if o.clip_index == (it.clip_index + 1) % 4).clip
        assert all(np.array_equal(a, b) for a, b in zip(s[:-1], donor.frames[:4]))
    # Perfect predictions: F1 1 everywhere, exact counts; rows summarise like `videomolmo eval`'s.
    preds = []
    for it in items:
        e = it.clip.expressions[it.expression]
        preds.append(it.clip.target_points([k for k in e.obj_ids if it.clip.points[k][4] is not None], 4))
    rows = item_rows(items, preds)
    assert len({r["key"] for r in rows}) == len(rows)
    s = summary.summarize("synthetic", rows)
    assert s["overall"]["points"]["F1"] == 100.0
    assert s["categories"]["motion"]["points"]["F1_ci"] == [100.0, 100.0]


def test_single_frame_control_starts_from_a_temporal_checkpoint(tmp_path):
    from videomolmo.model import save_pretrained
    from videomolmo.training.trainer import load_model_weights

    src = VideoMolmo(ModelConfig.from_name("test-tiny", **FLAT))
    save_pretrained(src, tmp_path / "m")
    single = VideoMolmo(ModelConfig.from_name("test-tiny", temporal="none", **FLAT))
    load_model_weights(single, tmp_path / "m")
    assert torch.equal(single.state_dict()["llm.lm_head.weight"], src.state_dict()["llm.lm_head.weight"])


@pytest.mark.parametrize("variant", ["add", "concat"])
def test_other_temporal_variants_start_from_a_cross_attention_checkpoint(tmp_path, variant):
    """Table 6 from one trained model: every weight but the temporal module's is loaded; the
    module keeps its own init. A checkpoint of the same variant still loads strictly."""
    from videomolmo.model import save_pretrained
    from videomolmo.training.trainer import load_model_weights

    src = VideoMolmo(ModelConfig.from_name("test-tiny", **FLAT))
    save_pretrained(src, tmp_path / "m")
    torch.manual_seed(1)
    other = VideoMolmo(ModelConfig.from_name("test-tiny", temporal=variant, **FLAT))
    own_init = {k: v.clone() for k, v in other.state_dict().items() if k.startswith("temporal.")}
    load_model_weights(other, tmp_path / "m")
    for k, v in other.state_dict().items():
        if k.startswith("temporal."):
            assert torch.equal(v, own_init[k]), k
        else:
            assert torch.equal(v, src.state_dict()[k]), k
    save_pretrained(other, tmp_path / "o")
    broken = VideoMolmo(ModelConfig.from_name("test-tiny", temporal=variant, **FLAT))
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "o" / "model.safetensors"))
    del state["llm.lm_head.weight"]
    save_file(state, str(tmp_path / "o" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model_weights(broken, tmp_path / "o")
