"""VideoMolmo model: shapes, loss masking, padding, KV cache, temporal variants, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videomolmo.errors import ConfigError, VideoError, VideoMolmoError
from videomolmo.model import IGNORE_INDEX, ModelConfig, Processor, VideoMolmo, build_tokenizer, collate
from videomolmo.model.preprocess import select_tiling
from videomolmo.model.temporal import TEMPORAL_MODULES, from_windows, to_windows

torch.set_num_threads(1)


def _frames(n, h=60, w=90, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _setup(name="test-tiny", seed=0, **overrides):
    cfg = ModelConfig.from_name(name, **overrides)
    torch.manual_seed(seed)
    model = VideoMolmo(cfg).eval()
    tok = build_tokenizer(cfg)
    return cfg, model, tok, Processor(cfg, tok)


def test_presets_and_validation():
    for name in ("molmo-7b-d", "videomolmo-7b", "tiny", "test-tiny"):
        cfg = ModelConfig.from_name(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    tiny = ModelConfig.from_name("tiny")
    assert tiny.crop_mode == "resize" and tiny.vision.image_size == 112 and tiny.tokens_per_crop == 64
    assert tiny.pool == "none" and tiny.projector_norm and tiny.prompt_order == "query_first"
    assert tiny.tokenizer == "bytes" and tiny.point_decimals == 0 and tiny.context_frames == 4
    with pytest.raises(ConfigError, match="temporal"):
        ModelConfig.from_name("tiny", temporal="lstm")
    with pytest.raises(ConfigError, match="unknown model preset"):
        ModelConfig.from_name("nope")


def test_tiny_preset_fits_the_bundle_budget():
    cfg = ModelConfig.from_name("tiny")
    with torch.device("meta"):
        model = VideoMolmo(cfg)
    total = model.parameter_counts()["total"]
    assert total * 4 <= 25e6, total  # fp32 safetensors <= 25 MB


def test_select_tiling_matches_molmo_rules():
    # 854x480 minus margins (112 px) with 224-px windows: Molmo picks 2 rows x 4 cols.
    assert tuple(select_tiling(480 - 112, 854 - 112, 224, 12)) == (2, 4)
    assert tuple(select_tiling(100, 100, 224, 12)) == (1, 1)
    assert tuple(select_tiling(4000, 300, 224, 12)) == (12, 1)


def test_molmo_token_layout_and_index_map():
    cfg, model, tok, proc = _setup()
    img = proc.encode_image(_frames(1, 70, 130)[0])
    toks = img.tokens
    assert toks[0] == tok.im_start_id
    # global crop: tokens_grid rows of (cols patches + im_col)
    g = cfg.tokens_grid
    assert list(toks[1:1 + g + 1]) == [tok.im_patch_id] * g + [tok.im_col_id]
    idx = img.patch_idx[img.patch_idx >= 0]
    # every <im_patch> token receives exactly one feature
    assert sorted(idx.tolist()) == np.nonzero(toks == tok.im_patch_id)[0].tolist()
    assert img.crops.shape[0] == img.image_masks.shape[0] == img.patch_idx.shape[0]
    # the quirk: a -1 padding-mask row at the end
    assert np.all(img.image_masks[-1] == -1)


def test_high_res_patches_land_in_raster_order():
    # A wide, short image gives one row of crops; along the first token row, crop j's kept
    # patches must all come before crop j+1's (left-to-right raster order).
    cfg, model, tok, proc = _setup()
    img = proc.encode_image(np.zeros((30, 120, 3), np.uint8))
    n_crops = img.crops.shape[0]
    assert n_crops >= 3  # global + at least 2 side by side
    toks = img.tokens
    hi_start = np.nonzero(toks == tok.im_start_id)[0][1]
    col_ids = np.nonzero(toks == tok.im_col_id)[0]
    first_row_end = col_ids[col_ids > hi_start][0]
    rows = []
    for c in range(1, n_crops):
        kept = img.patch_idx[c][img.patch_idx[c] >= 0]
        rows.append([i for i in kept if hi_start < i < first_row_end])
    assert all(rows)
    for a, b in zip(rows, rows[1:]):
        assert max(a) < min(b)
    # and together they cover the whole first row exactly once
    assert sorted(sum(rows, [])) == list(range(hi_start + 1, first_row_end))


def test_forward_shapes_and_loss_only_on_answer():
    cfg, model, tok, proc = _setup()
    fr = _frames(6)
    ex = proc(fr[5], fr[:5], "the red square", answer='<point x="10.0" y="20.0" alt="a">a</point>')
    n_ans = len(tok.encode(' <point x="10.0" y="20.0" alt="a">a</point>')) + 1
    assert (ex["labels"] != IGNORE_INDEX).sum() == n_ans
    assert ex["labels"][-1] == tok.eos_token_id
    assert ex["context_images"].shape[0] == cfg.context_frames
    batch = collate([ex], tok.pad_token_id, "right")
    out = model(**batch)
    assert out.logits.shape == (1, len(ex["input_ids"]), cfg.llm.vocab_size)
    # The loss equals the CE computed by hand on the answer positions only.
    lab = batch["labels"][0, 1:]
    keep = lab != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(out.logits[0, :-1][keep].float(), lab[keep])
    assert torch.allclose(out.loss, manual, atol=1e-6)
    out.loss.backward()
    assert model.projector.w1.weight.grad is not None
    assert model.vision.clip.embeddings.patch_embedding.weight.grad is not None


def test_left_and_right_padding_agree():
    cfg, model, tok, proc = _setup()
    fr = _frames(6)
    exs = [proc(fr[5], fr[:5], "the red square", answer="<point x=\"1\" y=\"2\" alt=\"s\">s</point>"),
           proc(fr[1], fr[:1], "dog", answer="There are none.")]
    r = collate(exs, tok.pad_token_id, "right")
    l = collate(exs, tok.pad_token_id, "left")
    out_r, out_l = model(**r), model(**l)
    assert torch.allclose(out_r.loss, out_l.loss, atol=1e-5)
    mr, ml = r["attention_mask"].bool(), l["attention_mask"].bool()
    assert torch.allclose(out_r.logits[mr], out_l.logits[ml], atol=1e-4)


def test_generation_cache_equals_no_cache_and_batched_equals_single():
    cfg, model, tok, proc = _setup(seed=3)
    fr = _frames(8, seed=1)
    exs = [proc(fr[i], fr[:i], q) for i, q in [(7, "the red square"), (2, "a"), (4, "the cat on the left")]]
    batch = collate(exs, tok.pad_token_id, "left")
    cached = model.generate(batch, max_new_tokens=12, eos_token_id=tok.eos_token_id)
    uncached = model.generate(batch, max_new_tokens=12, eos_token_id=tok.eos_token_id, use_kv_cache=False)
    assert cached == uncached
    singles = [model.generate(collate([e], tok.pad_token_id, "left"), max_new_tokens=12,
                              eos_token_id=tok.eos_token_id)[0] for e in exs]
    assert cached == singles
    with pytest.raises(ConfigError, match="left-padded"):
        model.generate(collate(exs, tok.pad_token_id, "right"), max_new_tokens=2)


@pytest.mark.parametrize("variant", sorted(TEMPORAL_MODULES))
def test_temporal_variants_run_and_use_context(variant):
    cfg, model, tok, proc = _setup(temporal=variant, temporal_init="xavier")
    fr = _frames(6)
    a = collate([proc(fr[5], fr[:5], "the red square")], tok.pad_token_id)
    b = collate([proc(fr[5], [f[::-1].copy() for f in fr[:5]], "the red square")], tok.pad_token_id)
    la, lb = model(**a).logits, model(**b).logits
    assert la.shape == lb.shape
    mod = TEMPORAL_MODULES[variant]
    if not mod.uses_context:
        assert "context_images" not in a and torch.equal(la, lb)
    else:
        assert not torch.allclose(la, lb)  # the context frames matter
    assert ("context_input_idx" in a) == mod.context_tokens


@pytest.mark.parametrize("variant", sorted(n for n, c in TEMPORAL_MODULES.items() if c.supports_identity_init))
def test_zero_init_temporal_module_is_identity(variant):
    cfg, model, tok, proc = _setup(name="tiny", temporal=variant, temporal_init="zero")
    _, single, _, _ = _setup(name="tiny", temporal="none")
    single.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("temporal.")})
    fr = _frames(6, 50, 70)
    with_ctx = collate([proc(fr[5], fr[:5], "the red square")], tok.pad_token_id)
    no_ctx = {k: v for k, v in with_ctx.items() if k != "context_images"}
    assert torch.allclose(model(**with_ctx).logits, single(**no_ctx).logits, atol=1e-5)


def test_windows_round_trip():
    x = torch.randn(2, 3, 5, 5, 4)
    w = to_windows(x)
    assert w.shape == (2 * 3 * 9, 4, 4)
    assert torch.equal(from_windows(w, 2, 3, 5), x)
    # the window holds a 2x2 block
    assert torch.equal(w[0], x[0, 0, :2, :2].reshape(4, 4))


def test_bad_inputs_raise_clear_errors():
    cfg, model, tok, proc = _setup()
    fr = _frames(2)
    with pytest.raises(ConfigError, match="query is empty"):
        proc(fr[1], fr[:1], "   ")
    with pytest.raises(VideoError, match="smaller than one 14x14 patch"):
        proc(np.zeros((10, 40, 3), np.uint8), [], "a")
    with pytest.raises(VideoError, match="uint8"):
        proc(np.zeros((40, 40, 3), np.float32), [], "a")
    with pytest.raises(VideoError, match="differs"):
        proc(fr[1], [np.zeros((20, 20, 3), np.uint8)], "a")
    with pytest.raises(VideoMolmoError):
        collate([], 0)
    batch = collate([proc(fr[1], fr[:1], "a")], tok.pad_token_id)
    batch.pop("context_images")
    with pytest.raises(ConfigError, match="context"):
        model(**batch)


def test_query_first_prompt_layout():
    cfg, model, tok, proc = _setup(name="tiny")
    ex = proc(_frames(1)[0], [], "red")
    ids = ex["input_ids"].tolist()
    first_image = ids.index(tok.im_start_id)
    assert tok.decode(ids[:first_image]) == " User: red"
    assert tok.decode(ids[first_image:]) == " Assistant:"
    assert (ex["image_input_idx"] >= 0).sum() == 64
