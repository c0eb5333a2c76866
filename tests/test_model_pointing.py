"""point_video: feature cache and batching give the same answers as the plain processor path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videomolmo.errors import ConfigError, VideoError
from videomolmo.model.temporal import TEMPORAL_MODULES
from videomolmo.model import (ModelConfig, Processor, VideoMolmo, build_tokenizer, collate, point_video,
                              save_pretrained, from_pretrained)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup():
    cfg = ModelConfig.from_name("test-tiny")
    torch.manual_seed(0)
    model = VideoMolmo(cfg).eval()
    tok = build_tokenizer(cfg)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (9, 40, 60, 3), dtype=np.uint8)
    return model, tok, Processor(cfg, tok), video


def test_cache_and_batching_match_the_processor_path(setup):
    model, tok, proc, video = setup
    model.vision_frames = 0
    cached = point_video(model, proc, video, "the red square", batch_size=4, max_new_tokens=8)
    assert model.vision_frames == len(video) + 1  # each frame once, plus one black frame
    model.vision_frames = 0
    upstream = point_video(model, proc, video, "the red square", batch_size=1, feature_cache=False,
                           max_new_tokens=8)
    assert model.vision_frames > 3 * len(video)
    assert [f.text for f in cached] == [f.text for f in upstream]
    assert [f.frame_idx for f in cached] == list(range(9))
    for t in (0, 2, 7):
        ex = proc(video[t], list(video[:t]), "the red square")
        gen = model.generate(collate([ex], tok.pad_token_id), max_new_tokens=8, eos_token_id=tok.eos_token_id)
        assert tok.decode(gen[0]) == cached[t].text
    for fp in cached:
        assert fp.points_px.ndim == 2 and fp.points_px.shape[1] == 2
    assert cached.get(3) is cached[3].points_px


def test_stride_frames_video_object_and_progress(setup):
    model, tok, proc, video = setup
    from videomolmo.video import open_video

    seen = []
    out = point_video(model, proc, open_video(video), "dog", k=3, batch_size=2, max_new_tokens=4,
                      progress=lambda d, t: seen.append((d, t)))
    assert [f.frame_idx for f in out] == [0, 3, 6]
    assert seen[-1] == (3, 3)
    out2 = point_video(model, proc, list(video), "dog", frames=[6, 0, 3], batch_size=3, max_new_tokens=4)
    assert [f.text for f in out2] == [f.text for f in out]
    single = point_video(model, proc, video, "dog", frames=[6], temporal=False, max_new_tokens=4)
    assert len(single) == 1


def test_memory_is_flat_in_video_length(setup, monkeypatch):
    # The cache never holds more than batch + l frames, however long the video.
    model, tok, proc, _ = setup
    import videomolmo.model.pointing as pointing

    sizes = []
    orig = pointing._encode_missing

    def spy(model_, processor, frames_np, image_inputs, cache, indices):
        orig(model_, processor, frames_np, image_inputs, cache, indices)
        sizes.append(len(cache))

    monkeypatch.setattr(pointing, "_encode_missing", spy)
    long_video = np.random.default_rng(1).integers(0, 256, (30, 30, 30, 3), dtype=np.uint8)
    point_video(model, proc, long_video, "x", batch_size=2, max_new_tokens=1)
    assert max(sizes) <= 2 + model.config.context_frames


def test_bad_input(setup, tmp_path):
    model, tok, proc, video = setup
    with pytest.raises(ConfigError, match="query is empty"):
        point_video(model, proc, video, " ")
    with pytest.raises(ConfigError, match="k"):
        point_video(model, proc, video, "a", k=0)
    with pytest.raises(ConfigError, match="outside"):
        point_video(model, proc, video, "a", frames=[99])
    with pytest.raises(VideoError, match="smaller than one"):
        point_video(model, proc, np.zeros((3, 8, 30, 3), np.uint8), "a")


def test_loaded_model_carries_its_processor(setup, tmp_path):
    model, tok, proc, video = setup
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    out = point_video(loaded, loaded.processor, video, "the red square", frames=[4], max_new_tokens=8)
    ref = point_video(model, proc, video, "the red square", frames=[4], max_new_tokens=8)
    assert out[0].text == ref[0].text


@pytest.mark.parametrize("variant", sorted(set(TEMPORAL_MODULES) - {"cross_attention"}))
def test_other_temporal_variants_point_like_the_processor_path(variant):
    cfg = ModelConfig.from_name("test-tiny", temporal=variant)
    torch.manual_seed(1)
    model = VideoMolmo(cfg).eval()
    tok = build_tokenizer(cfg)
    proc = Processor(cfg, tok)
    video = np.random.default_rng(2).integers(0, 256, (6, 30, 50, 3), dtype=np.uint8)
    out = point_video(model, proc, video, "the cat", frames=[1, 5], batch_size=2, max_new_tokens=6)
    for fp in out:
        t = fp.frame_idx
        ex = proc(video[t], list(video[:t]), "the cat")
        gen = model.generate(collate([ex], tok.pad_token_id), max_new_tokens=6, eos_token_id=tok.eos_token_id)
        assert tok.decode(gen[0]) == fp.text


def test_several_queries_share_the_vision_pass(setup):
    model, tok, proc, video = setup
    from videomolmo.model import point_video_queries

    model.vision_frames = 0
    multi = point_video_queries(model, proc, video, ["the red square", "dog", "the red square"], batch_size=4,
                                max_new_tokens=6)
    assert model.vision_frames == len(video) + 1
    assert set(multi) == {"the red square", "dog"}
    for q in multi:
        single = point_video(model, proc, video, q, batch_size=3, max_new_tokens=6)
        assert [f.text for f in multi[q]] == [f.text for f in single]
        assert [f.frame_idx for f in multi[q]] == list(range(len(video)))


def test_context_ablation_modes_match_the_processor_path(setup):
    """`--context repeat|shuffle|none` feed exactly the intended context to the model."""
    model, tok, proc, video = setup
    donor = np.ascontiguousarray(video[::-1])
    with torch.no_grad():
        for lin in (model.temporal.wo,) if hasattr(model.temporal, "wo") else ():
            torch.nn.init.normal_(lin.weight, std=0.5)  # not the identity, so the context matters
    q = "the red square"
    frames = [1, 5, 8]
    out = {m: point_video(model, proc, video, q, frames=frames, batch_size=2, max_new_tokens=8, context=m,
                          context_video=donor if m == "shuffle" else None)
           for m in ("repeat", "shuffle", "none")}
    black = np.zeros_like(video[0])
    for j, t in enumerate(frames):
        ctx = {"repeat": [video[t]] * 4,
               "shuffle": [black] * max(0, 4 - t) + list(donor[max(0, t - 4):t]),
               "none": None}
        for m, c in ctx.items():
            if m == "none":
                want = point_video(model, proc, video, q, frames=[t], temporal=False, max_new_tokens=8)[0].text
            else:
                ex = proc(video[t], c, q)
                gen = model.generate(collate([ex], tok.pad_token_id), max_new_tokens=8, eos_token_id=tok.eos_token_id)
                want = tok.decode(gen[0])
            assert out[m][j].text == want, (m, t)
    with pytest.raises(ConfigError, match="context"):
        point_video(model, proc, video, q, context="sideways")
    with pytest.raises(ConfigError, match="another clip"):
        point_video(model, proc, video, q, context="shuffle")


def test_apply_context_mode():
    from videomolmo.model.pointing import apply_context_mode

    ctx, cur, don = torch.zeros(2, 4, 3), torch.ones(2, 4, 3), torch.full((2, 4, 3), 2.0)
    assert apply_context_mode("normal", ctx, cur) is ctx
    assert torch.equal(apply_context_mode("repeat", ctx, cur), cur)
    assert torch.equal(apply_context_mode("shuffle", ctx, cur, don), don)
    with pytest.raises(ConfigError):
        apply_context_mode("shuffle", ctx, cur, torch.zeros(1, 4, 3))
