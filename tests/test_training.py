import json
import os
import socket

import numpy as np
import pytest
import torch

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.model.temporal import TEMPORAL_MODULES
from videomolmo.synth import SynthConfig, clip_rng, generate_clip
from videomolmo.training.checkpoint import (flatten_optimizer_state, latest_checkpoint, load_checkpoint,
                                            save_checkpoint, unflatten_optimizer_state)
from videomolmo.training.examples import Curriculum, SynthStream, answer_text, example_from_clip
from videomolmo.training.trainer import TrainConfig, lr_factor, param_groups, train

torch.set_num_threads(1)


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warmup
    assert f[-1] == pytest.approx(0.1, abs=0.01)


def test_examples_answer_text_and_context():
    clip = generate_clip(clip_rng(0, "train", 5), SynthConfig(frames=6))
    for j, e in enumerate(clip.expressions):
        ex = example_from_clip(clip, j, t=5, context=4, decimals=0)
        assert len(ex.frames) == 5 and ex.frame is clip.frames[5] or np.array_equal(ex.frame, clip.frames[5])
        if len(ex.points) == 0:
            assert ex.answer == "There are none."
        else:
            assert "<point" in ex.answer
    # Integer percents (point_decimals=0) and the border clamp.
    assert answer_text(np.array([[112.0, 0.0]]), 112, 112, 0) == '<point x="100" y="0" alt="object">object</point>'
    # Start of a video: fewer context frames, the processor pads with black frames.
    assert len(example_from_clip(clip, 0, t=1, context=4).frames) == 2


def test_synth_stream_is_resumable_and_follows_curriculum():
    a = SynthStream(3, total_steps=10, curriculum=Curriculum.from_name("probe2"))
    first = a.batch(2, step=0)
    assert all(e.kind == "appearance" for e in first)  # one-sprite stage
    state = a.state()
    nxt = [e.query for e in a.batch(3, step=5)]
    b = SynthStream(3, total_steps=10)
    b.set_state(state)
    assert [e.query for e in b.batch(3, step=5)] == nxt
    with pytest.raises(ConfigError):
        Curriculum.from_name("nope")


def test_checkpoint_roundtrip_optimizer_state(tmp_path):
    p = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(p.parameters(), lr=1e-2)
    p(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    back = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    assert torch.equal(back["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    save_checkpoint(tmp_path, 7, p.state_dict(), optimizer=opt)
    ck = latest_checkpoint(tmp_path)
    assert ck.name == "step-0000007"
    opt2 = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-2)
    step, state, _ = load_checkpoint(ck, optimizer=opt2)
    assert step == 7 and torch.equal(state["weight"], p.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg_sq"], opt.state_dict()["state"][0]["exp_avg_sq"])
    (ck / "state.json").unlink()
    with pytest.raises(CheckpointError):
        latest_checkpoint(tmp_path)


def test_param_groups_split_llm_and_vision():
    from videomolmo.model import ModelConfig, VideoMolmo

    model = VideoMolmo(ModelConfig.from_name("test-tiny"))
    cfg = TrainConfig.from_name("test", lr_llm=1.0, lr_vision=2.0, lr_connector=3.0, lr_temporal=4.0)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert {g: groups[g]["lr"] for g in groups} == {"vision": 2.0, "connector": 3.0, "temporal": 4.0, "llm": 1.0}
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_train_resume_is_exact(tmp_path):
    """3 steps straight == 2 steps, 'crash', resume for 1 more: same weights, same log rows."""
    cfg = TrainConfig.from_name("test", steps=3, checkpoint_every=2)
    full = train(cfg, tmp_path / "a", progress=False)
    train(TrainConfig.from_name("test", steps=2, checkpoint_every=2), tmp_path / "b", progress=False)
    resumed = train(TrainConfig.from_name("test", steps=3), tmp_path / "b", resume=True, progress=False)
    for (k, v), (k2, v2) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert k == k2 and torch.allclose(v, v2, atol=1e-6), k
    rows = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (full.final / "model.safetensors").is_file()
    assert full.model.config.name == "test-tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file

    res = train(TrainConfig.from_name("test", steps=2, checkpoint_every=2), out, progress=False)
    save_file({k: v.contiguous() for k, v in res.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_ddp_two_process_gloo_ranks_end_identical(tmp_path):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    from videomolmo.model import ModelConfig, VideoMolmo

    # fork: the children inherit the imported modules instead of re-importing torch + transformers.
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    a = load_file(str(tmp_path / "rank0.safetensors"))
    b = load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # ... and training really moved the weights (same seed init).
    torch.manual_seed(0)
    init = VideoMolmo(ModelConfig.from_name("test-tiny")).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)


def test_bad_config_is_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from videomolmo.cli import app

    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--preset", "huge"])
    assert r.exit_code == 2 and "huge" in r.output
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--preset", "test", "--precision", "fp8"])
    assert r.exit_code == 2 and "fp8" in r.output
    r = CliRunner().invoke(app, ["train", "--out", str(tmp_path), "--preset", "test", "--data", str(tmp_path / "nope")])
    assert r.exit_code == 2


def test_dense_targets_and_vision_pretraining(tmp_path):
    from safetensors.torch import load_file

    from videomolmo.synth import COLOURS
    from videomolmo.training.pretrain_vision import VisionPretrainConfig, dense_targets, run_pretraining

    clip = generate_clip(clip_rng(0, "train", 1), SynthConfig(frames=5))
    tg = dense_targets(clip, 14, 0.1)
    assert tg["colour"].shape == (5, 8, 8) and tg["fg"].any()
    names = list(COLOURS)
    for t, y, x in zip(*np.nonzero(tg["fg"])):
        c = names[tg["colour"][t, y, x] - 1]
        assert c in {s.colour for s in clip.sprites}
        assert 0 <= tg["absolute"][t, y, x, 0] <= 1
    assert (tg["motion"][~tg["fg"]] == -1).all()
    cfg = VisionPretrainConfig.from_name("test")
    path = run_pretraining(cfg, tmp_path / "pv", progress=False)
    state = load_file(str(path))
    assert "embeddings.position_embedding.weight" in state
    # The exported ViT loads into the model's vision tower of a matching config.
    assert (tmp_path / "pv" / "vision_config.json").is_file()


@pytest.mark.parametrize("variant", sorted(TEMPORAL_MODULES))
def test_every_temporal_variant_trains(tmp_path, variant):
    """The Table-6 ablation's variants all run through the same recipe."""
    cfg = TrainConfig.from_name("test", steps=1, model_overrides={"temporal": variant})
    res = train(cfg, tmp_path / variant, progress=False)
    assert res.model.config.temporal == variant and res.step == 1


def test_examples_from_any_reader_and_training_on_a_folder(tmp_path):
    from videomolmo.data import load_dataset
    from videomolmo.points import parse_points
    from videomolmo.synth import write_dataset
    from videomolmo.training.examples import examples_from_dataset

    root = write_dataset(tmp_path / "ds", 2, seed=1, split="train", config=SynthConfig(frames=5))
    ds = load_dataset(root)
    exs = list(examples_from_dataset(ds, context=4, decimals=1))
    assert len(exs) == sum(len(s) for s in ds)
    for e in exs:
        assert 1 <= len(e.frames) <= 5 and e.kind
        back = parse_points(e.answer, 112, 112)
        assert len(back) == len(e.points)
        if len(back):
            # one-decimal percents: within 0.06 % of 112 px, after Molmo's (x, y) sort
            assert np.allclose(back, e.points[np.lexsort((e.points[:, 1], e.points[:, 0]))], atol=0.1)
    res = train(TrainConfig.from_name("test", steps=1, data=str(root)), tmp_path / "run", progress=False)
    assert res.step == 1


def test_shape_regime_targets_and_heldout_measure(tmp_path):
    """The big-batch shape regime: colour-free per-patch masks, coverage, per-sprite targets."""
    from videomolmo.synth import SHAPES
    from videomolmo.training.pretrain_vision import VisionPretrainConfig, dense_targets, run_pretraining

    clip = generate_clip(clip_rng(0, "train", 3), SynthConfig(frames=2))
    tg = dense_targets(clip, 14, 0.1)
    fgpix = clip.masks.any(0)
    # A patch's geometry target is exactly its own 14x14 block of the foreground (any colour).
    assert np.array_equal(tg["geometry"][1, 2, 5].reshape(14, 14), fgpix[1, 28:42, 70:84])
    assert np.allclose(tg["cover"], tg["sprite_cover"].max(0))
    K = len(clip.sprites)
    assert [SHAPES[i] for i in tg["sprite_shape"][:K]] == [s.shape for s in clip.sprites]
    assert (tg["sprite_shape"][K:] == -1).all()
    cfg = VisionPretrainConfig.from_name("test-shape")
    run_pretraining(cfg, tmp_path / "pv", progress=False)
    log = [json.loads(x) for x in (tmp_path / "pv" / "pretrain_log.jsonl").read_text().splitlines()]
    held = [r["heldout"] for r in log if "heldout" in r]
    assert held and 0 <= held[-1]["shape_acc_covered"] <= 1 and held[-1]["covered_patches"] > 0
    assert any("big_loss_geometry" in r for r in log)
    from videomolmo.training.pretrain_vision import evaluate_run

    res = evaluate_run(tmp_path / "pv", clips=3)
    assert res["step"] == cfg.steps and 0 <= res["shape_acc_covered"] <= 1


def test_shape_geometry_targets():
    """`shape_targets`: the owner's mask over the 3x3-patch neighbourhood and centred on it."""
    from videomolmo.training.pretrain_vision import dense_targets, shape_targets

    clip = generate_clip(clip_rng(0, "train", 3), SynthConfig(frames=2))
    tg = dense_targets(clip, 14, 0.1)
    st = shape_targets(clip, 14, 0.1)
    assert st["nbr_mask"].shape == (2, 8, 8, 21 * 21) and st["centred_mask"].shape == (2, 8, 8, 16 * 16)
    assert (st["nbr_mask"][~tg["fg"]] == 0).all() and (st["centred_mask"][~tg["fg"]] == 0).all()
    counts = clip.masks.reshape(len(clip.sprites), 2, 8, 14, 8, 14).sum((3, 5))
    for t, y, x in zip(*np.nonzero(tg["fg"])):
        k = counts[:, t, y, x].argmax()
        half = clip.masks[k, t].reshape(56, 2, 56, 2).mean((1, 3))
        nbr = st["nbr_mask"][t, y, x].reshape(21, 21)
        # The middle 7x7 is the patch itself; the rim its neighbours (zero outside the frame).
        assert np.allclose(nbr[7:14, 7:14], half[7 * y:7 * y + 7, 7 * x:7 * x + 7])
        pad = np.pad(half, 7)
        assert np.allclose(nbr, pad[7 * y:7 * y + 21, 7 * x:7 * x + 21])
        # The centred mask is the same for every patch of the sprite and holds its visible area
        # (a sprite of radius <= 12 fits the 32x32 window).
        same = np.nonzero((counts[:, t].argmax(0) == k) & tg["fg"][t])
        assert all(np.array_equal(st["centred_mask"][t, y, x], st["centred_mask"][t, yy, xx]) for yy, xx in zip(*same))
        assert st["centred_mask"][t, y, x].sum() * 4 == pytest.approx(clip.masks[k, t].sum())


def test_shape2_preset_trains_and_resumes_exactly(tmp_path):
    """`test-shape2` (the tiny-shape2 recipe at test size): the neighbourhood and centred mask
    losses are trained on the static batch of dense clips, and a run stopped and resumed ends
    exactly where an uninterrupted one does."""
    from safetensors.torch import load_file

    from videomolmo.training.pretrain_vision import VisionPretrainConfig, evaluate_run, run_pretraining

    cfg = VisionPretrainConfig.from_name("test-shape2")
    assert cfg.nbr_weight > 0 and cfg.centred_weight > 0 and cfg.static_sprites is not None
    cfg.steps, cfg.log_every = 4, 1
    run_pretraining(cfg, tmp_path / "a", progress=False)
    run_pretraining(cfg, tmp_path / "b", progress=False, stop_at=2)
    run_pretraining(cfg, tmp_path / "b", progress=False)
    a, b = (load_file(str(tmp_path / r / "vision.safetensors")) for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (tmp_path / "a" / "pretrain_log.jsonl").read_text().splitlines()]
    assert all("big_loss_nbr" in r and "big_loss_centred" in r for r in log if "loss" in r)
    res = evaluate_run(tmp_path / "b", clips=3)
    assert res["step"] == 4 and 0 <= res["shape_acc_covered"] <= 1
    with pytest.raises(ConfigError):
        VisionPretrainConfig.from_name("nope")


def test_every_vision_preset_loads_and_the_cli_help_names_them_all():
    import inspect

    from videomolmo.cli.train import pretrain_vision_cmd
    from videomolmo.training.pretrain_vision import VISION_PRESETS, VisionPretrainConfig

    for name in VISION_PRESETS:
        VisionPretrainConfig.from_name(name)
    with pytest.raises(ConfigError, match="test-shape2"):
        VisionPretrainConfig.from_name("no-such-preset")
    # The CLI keeps its own copy of the names (importing pretrain_vision would import torch).
    help_text = inspect.signature(pretrain_vision_cmd).parameters["preset"].default.help
    assert help_text == " | ".join(VISION_PRESETS)


def test_every_curriculum_loads_and_the_cli_help_names_them_all():
    import inspect

    from videomolmo.cli.train import train_cmd
    from videomolmo.training.examples import CURRICULA, Curriculum

    for name in CURRICULA:
        cur = Curriculum.from_name(name)
        for _, weights in cur.stages:
            for preset in weights:
                SynthConfig.from_name(preset)  # every stage names a real synth preset
    assert Curriculum().stages == Curriculum.from_name("probe2").stages
    with pytest.raises(ConfigError, match="shape-text"):
        Curriculum.from_name("no-such-curriculum")
    # The CLI keeps its own copy of the names (its start-up imports no training code).
    help_text = inspect.signature(train_cmd).parameters["curriculum"].default.help
    assert help_text == " | ".join(CURRICULA)


def test_saved_models_record_their_data_and_a_chained_run_warns_on_a_replay(tmp_path, recwarn):
    """`trained_on` lists the init's streams then the run's own; chaining with the same seed and
    curriculum warns (Stages 7-12 replayed one stream six times), a new seed does not."""
    import warnings

    from videomolmo.training.lineage import DataReplayWarning, streams_of

    first = train(TrainConfig.from_name("test", steps=2, checkpoint_every=2), tmp_path / "a", progress=False)
    assert streams_of(first.final) == [{"data": "synth", "seed": 0, "examples": 4, "curriculum": "mix"}]
    assert not [w for w in recwarn if issubclass(w.category, DataReplayWarning)]

    with pytest.warns(DataReplayWarning, match="seed 0.*another --seed"):
        again = train(TrainConfig.from_name("test", steps=1, init=str(first.final)), tmp_path / "b",
                      progress=False)
    assert [s["seed"] for s in streams_of(again.final)] == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataReplayWarning)
        fresh = train(TrainConfig.from_name("test", steps=1, seed=1, init=str(again.final)), tmp_path / "c",
                      progress=False)
        # Another curriculum is another stream too.
        train(TrainConfig.from_name("test", steps=1, curriculum="single", init=str(again.final)),
              tmp_path / "d", progress=False)
    assert [s["seed"] for s in streams_of(fresh.final)] == [0, 0, 1]
    # A folder saved before `trained_on` existed: the run next to it tells its last stream.
    legacy = tmp_path / "legacy" / "final"
    legacy.mkdir(parents=True)
    cfg = json.loads((first.final / "config.json").read_text())
    del cfg["trained_on"]
    (legacy / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "legacy" / "train_config.json").write_text(
        json.dumps({"data": "synth", "seed": 3, "curriculum": "mix", "steps": 10, "batch_size": 8}))
    assert streams_of(legacy) == [{"data": "synth", "seed": 3, "examples": 80, "curriculum": "mix"}]
    assert streams_of(tmp_path / "nowhere") == []


def test_train_cli_says_when_a_chained_run_replays_its_init_data(tmp_path):
    from typer.testing import CliRunner

    from videomolmo.cli import app

    runner = CliRunner()
    base = ["train", "--preset", "test", "--steps", "1", "--threads", "1"]
    first = runner.invoke(app, [*base, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "warning:" not in first.output
    again = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--init", str(tmp_path / "a" / "final")])
    assert again.exit_code == 0, again.output
    assert "warning:" in again.output and "another --seed" in again.output
    assert "DataReplayWarning" not in again.output  # said once, as a CLI line
    fresh = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--seed", "1", "--init",
                                str(tmp_path / "a" / "final")])
    assert fresh.exit_code == 0 and "warning:" not in fresh.output, fresh.output
