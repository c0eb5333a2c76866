"""Checkpoints: Molmo key mapping checked against a plain re-implementation of Molmo's forward,
our own save/load, and the broken-checkpoint errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from videomolmo.errors import CheckpointError
from videomolmo.model import ModelConfig, Processor, build_tokenizer, collate
from videomolmo.model.checkpoint import from_pretrained, load_molmo_checkpoint, save_pretrained

torch.set_num_threads(1)


# -- a tiny random checkpoint in Molmo's key layout ---------------------------------------------
def molmo_state(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def w(*shape, std=0.08):
        return torch.randn(*shape, generator=g) * std

    def norm(n):
        return 1.0 + w(n, std=0.1)

    v, c = cfg.vision, cfg.llm
    D, C, H, hd = v.width, v.feature_dim, c.hidden, c.hidden // c.heads
    kv = c.kv_heads * hd
    sd = {
        "model.transformer.wte.embedding": w(c.vocab_size, H, std=0.5),
        "model.transformer.wte.new_embedding": w(c.additional_vocab_size, H, std=0.5),
        "model.transformer.ln_f.weight": norm(H),
        "model.transformer.ff_out.weight": w(c.vocab_size, H),
    }
    for i in range(c.layers):
        b = f"model.transformer.blocks.{i}."
        sd[b + "att_proj.weight"] = w(H + 2 * kv, H)
        sd[b + "att_proj.bias"] = w(H + 2 * kv)
        sd[b + "attn_out.weight"] = w(H, H)
        sd[b + "ff_proj.weight"] = w(2 * c.intermediate, H)
        sd[b + "ff_out.weight"] = w(H, c.intermediate)
        sd[b + "attn_norm.weight"] = norm(H)
        sd[b + "ff_norm.weight"] = norm(H)
    vit = "model.vision_backbone.image_vit."
    sd[vit + "patch_embedding.weight"] = w(D, v.patch_size ** 2 * 3)
    sd[vit + "class_embedding"] = w(D, std=0.5)
    sd[vit + "positional_embedding"] = w(v.grid ** 2 + 1, D, std=0.5)
    sd[vit + "pre_ln.weight"], sd[vit + "pre_ln.bias"] = norm(D), w(D)
    for i in range(v.layers):
        b = vit + f"transformer.resblocks.{i}."
        for n in ("wq", "wk", "wv", "wo"):
            sd[b + f"attention.{n}.weight"], sd[b + f"attention.{n}.bias"] = w(D, D, std=0.2), w(D)
        sd[b + "attention_norm.weight"], sd[b + "attention_norm.bias"] = norm(D), w(D)
        sd[b + "ffn_norm.weight"], sd[b + "ffn_norm.bias"] = norm(D), w(D)
        sd[b + "feed_forward.w1.weight"], sd[b + "feed_forward.w1.bias"] = w(v.mlp_dim, D, std=0.2), w(v.mlp_dim)
        sd[b + "feed_forward.w2.weight"], sd[b + "feed_forward.w2.bias"] = w(D, v.mlp_dim, std=0.2), w(D)
    vb = "model.vision_backbone."
    sd[vb + "pad_embed"] = w(2, C, std=0.5)
    inner = cfg.pool_heads * cfg.pool_head_dim
    for n in ("wq", "wk", "wv"):
        sd[vb + f"image_pooling_2d.{n}.weight"], sd[vb + f"image_pooling_2d.{n}.bias"] = w(inner, C, std=0.2), w(inner)
    sd[vb + "image_pooling_2d.wo.weight"], sd[vb + "image_pooling_2d.wo.bias"] = w(cfg.pool_dim, inner, std=0.2), w(cfg.pool_dim)
    sd[vb + "image_projector.w1.weight"] = w(cfg.projector_hidden, cfg.pool_dim, std=0.2)
    sd[vb + "image_projector.w3.weight"] = w(cfg.projector_hidden, cfg.pool_dim, std=0.2)
    sd[vb + "image_projector.w2.weight"] = w(H, cfg.projector_hidden, std=0.2)
    t_inner = cfg.temporal_heads * cfg.temporal_head_dim
    for n in ("wq", "wk", "wv"):
        sd[vb + f"adapter.{n}.weight"] = w(t_inner, C, std=0.2)
    sd[vb + "adapter.wo.weight"] = w(C, t_inner, std=0.2)
    return sd


def write_sharded(sd: dict[str, torch.Tensor], directory, n_shards: int = 2) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    weight_map = {}
    for s in range(n_shards):
        name = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[s::n_shards]}
        save_file(part, str(directory / name))
        weight_map.update({k: name for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


# -- Molmo's forward, written independently from the layout description ------------------------
def _attend(q, k, v, causal=False):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        L = s.shape[-1]
        s = s.masked_fill(torch.triu(torch.ones(L, L, dtype=torch.bool), 1), float("-inf"))
    return s.softmax(-1) @ v


def _heads(x, n):
    return x.reshape(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def _merge(x):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def reference_vit(sd, cfg, crops):
    v = cfg.vision
    n, p, g = crops.shape[0], v.patch_size, v.grid
    x = crops.permute(0, 2, 3, 1).reshape(n, g, p, g, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(n, g * g, p * p * 3)
    keep = ~(x == -1).all(dim=2).all(dim=1)
    vit = "model.vision_backbone.image_vit."
    x = x @ sd[vit + "patch_embedding.weight"].T
    x = torch.cat([sd[vit + "class_embedding"].expand(n, 1, -1), x], 1) + sd[vit + "positional_embedding"][None]
    x = F.layer_norm(x, (v.width,), sd[vit + "pre_ln.weight"], sd[vit + "pre_ln.bias"], 1e-5)
    outs = []
    for i in range(v.layers):
        b = vit + f"transformer.resblocks.{i}.attention"
        y = F.layer_norm(x, (v.width,), sd[b + "_norm.weight"], sd[b + "_norm.bias"], 1e-5)
        q, k, vv = (_heads(y @ sd[f"{b}.{n}.weight"].T + sd[f"{b}.{n}.bias"], v.heads) for n in ("wq", "wk", "wv"))
        x = x + _merge(_attend(q, k, vv)) @ sd[b + ".wo.weight"].T + sd[b + ".wo.bias"]
        b = vit + f"transformer.resblocks.{i}."
        y = F.layer_norm(x, (v.width,), sd[b + "ffn_norm.weight"], sd[b + "ffn_norm.bias"], 1e-5)
        y = y @ sd[b + "feed_forward.w1.weight"].T + sd[b + "feed_forward.w1.bias"]
        y = y * torch.sigmoid(1.702 * y)
        x = x + y @ sd[b + "feed_forward.w2.weight"].T + sd[b + "feed_forward.w2.bias"]
        outs.append(x)
    f = torch.cat([outs[l] for l in v.feature_layers], -1)[:, 1:]
    return f * keep[:, None, None]


def reference_logits(sd, cfg, ex):
    vb = "model.vision_backbone."
    images = torch.from_numpy(ex["images"])
    masks = torch.from_numpy(ex["image_masks"])
    feats = reference_vit(sd, cfg, images)
    ctx = torch.stack([reference_vit(sd, cfg, torch.from_numpy(c)) for c in ex["context_images"]]).mean(0)
    all_pad = (masks == 0).float()[..., None]
    partial = ((masks < 1) & (masks != 0)).float()[..., None]
    feats = feats + sd[vb + "pad_embed"][0] * all_pad + sd[vb + "pad_embed"][1] * partial
    ctx = ctx + sd[vb + "pad_embed"][0] * all_pad + sd[vb + "pad_embed"][1] * partial
    n, N, C = feats.shape
    h = cfg.vision.grid // 2

    def windows(t):  # 'n (h dh) (w dw) c -> (n h w) (dh dw) c'
        return t.reshape(n, h, 2, h, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(n * h * h, 4, C)

    xw, cw = windows(feats), windows(ctx)
    th = cfg.temporal_heads
    q = _heads(xw @ sd[vb + "adapter.wq.weight"].T, th)
    k = _heads(cw @ sd[vb + "adapter.wk.weight"].T, th)
    vv = _heads(cw @ sd[vb + "adapter.wv.weight"].T, th)
    xw = xw + _merge(_attend(q, k, vv)) @ sd[vb + "adapter.wo.weight"].T
    P = vb + "image_pooling_2d."
    query = xw.mean(1, keepdim=True)
    q = _heads(query @ sd[P + "wq.weight"].T + sd[P + "wq.bias"], cfg.pool_heads)
    k = _heads(xw @ sd[P + "wk.weight"].T + sd[P + "wk.bias"], cfg.pool_heads)
    vv = _heads(xw @ sd[P + "wv.weight"].T + sd[P + "wv.bias"], cfg.pool_heads)
    pooled = _merge(_attend(q, k, vv))[:, 0] @ sd[P + "wo.weight"].T + sd[P + "wo.bias"]
    pr = vb + "image_projector."
    proj = (F.silu(pooled @ sd[pr + "w1.weight"].T) * (pooled @ sd[pr + "w3.weight"].T)) @ sd[pr + "w2.weight"].T
    proj = proj.reshape(n, -1, proj.shape[-1])

    c = cfg.llm
    ids = torch.from_numpy(ex["input_ids"])
    table = torch.cat([sd["model.transformer.wte.embedding"], sd["model.transformer.wte.new_embedding"]])
    x = table[ids].clone()
    idx = torch.from_numpy(ex["image_input_idx"]).reshape(-1)
    pf = proj.reshape(-1, proj.shape[-1])
    for j in range(idx.shape[0]):
        if idx[j] >= 0:
            x[idx[j]] += pf[j]
    x = x[None]
    L, hd = x.shape[1], c.hidden // c.heads
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(L).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(t):
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    def rms(t, wgt):
        return wgt * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + c.rms_eps))

    kvd = c.kv_heads * hd
    for i in range(c.layers):
        b = f"model.transformer.blocks.{i}."
        y = rms(x, sd[b + "attn_norm.weight"])
        qkv = y @ sd[b + "att_proj.weight"].T + sd[b + "att_proj.bias"]
        q, k, vv = qkv[..., : c.hidden], qkv[..., c.hidden: c.hidden + kvd], qkv[..., c.hidden + kvd:]
        q, k, vv = _heads(q, c.heads), _heads(k, c.kv_heads), _heads(vv, c.kv_heads)
        q, k = rope(q), rope(k)
        rep = c.heads // c.kv_heads
        k, vv = k.repeat_interleave(rep, 1), vv.repeat_interleave(rep, 1)
        x = x + _merge(_attend(q, k, vv, causal=True)) @ sd[b + "attn_out.weight"].T
        y = rms(x, sd[b + "ff_norm.weight"]) @ sd[b + "ff_proj.weight"].T
        a, gate = y.chunk(2, -1)
        x = x + (F.silu(gate) * a) @ sd[b + "ff_out.weight"].T
    x = rms(x, sd["model.transformer.ln_f.weight"])
    return (x @ sd["model.transformer.ff_out.weight"].T)[0]


@pytest.fixture(scope="module")
def tiny_molmo(tmp_path_factory):
    cfg = ModelConfig.from_name("test-tiny")
    sd = molmo_state(cfg)
    d = tmp_path_factory.mktemp("molmo")
    write_sharded(sd, d)
    return cfg, sd, d


def _examples(cfg):
    tok = build_tokenizer(cfg)
    proc = Processor(cfg, tok)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (50, 100, 3), dtype=np.uint8) for _ in range(6)]
    return tok, [proc(frames[5], frames[:5], "the red square"), proc(frames[2], frames[:2], "a dog")]


def test_molmo_mapping_matches_plain_reimplementation(tiny_molmo):
    cfg, sd, d = tiny_molmo
    model = load_molmo_checkpoint(d, cfg)
    tok, exs = _examples(cfg)
    for ex in exs:
        ours = model(**collate([ex], tok.pad_token_id)).logits[0]
        ref = reference_logits(sd, cfg, ex)
        diff = (ours - ref).abs().max().item()
        assert diff <= 1e-5, diff
        assert ref.abs().max() > 0.1  # not a trivially tiny signal


def test_save_load_round_trip(tiny_molmo, tmp_path):
    cfg, sd, d = tiny_molmo
    model = load_molmo_checkpoint(d, cfg)
    save_pretrained(model, tmp_path / "ours")
    again = from_pretrained(tmp_path / "ours")
    assert again.config == model.config
    tok, exs = _examples(cfg)
    batch = collate(exs, tok.pad_token_id, "left")
    assert torch.equal(model(**batch).logits, again(**batch).logits)
    assert not list(tmp_path.glob("ours/*.tmp"))


def test_missing_and_unexpected_keys_are_named(tiny_molmo, tmp_path):
    cfg, sd, _ = tiny_molmo
    broken = dict(sd)
    broken.pop("model.transformer.ln_f.weight")
    write_sharded(broken, tmp_path / "missing")
    with pytest.raises(CheckpointError, match="missing weights for llm.model.norm.weight"):
        load_molmo_checkpoint(tmp_path / "missing", cfg)
    extra = dict(sd)
    extra["model.transformer.blocks.0.q_norm.weight"] = torch.ones(4)
    write_sharded(extra, tmp_path / "extra")
    with pytest.raises(CheckpointError, match="unexpected weights model.transformer.blocks.0.q_norm.weight"):
        load_molmo_checkpoint(tmp_path / "extra", cfg)


def test_single_frame_molmo_needs_explicit_temporal_init(tiny_molmo, tmp_path):
    cfg, sd, _ = tiny_molmo
    molmo = {k: v for k, v in sd.items() if ".adapter." not in k}
    write_sharded(molmo, tmp_path / "m")
    with pytest.raises(CheckpointError, match="init_missing_temporal"):
        load_molmo_checkpoint(tmp_path / "m", cfg)
    zero = cfg.replace(temporal_init="zero")
    model = load_molmo_checkpoint(tmp_path / "m", zero, init_missing_temporal=True)
    assert torch.count_nonzero(model.temporal.wo.weight) == 0
    single = load_molmo_checkpoint(tmp_path / "m", cfg.replace(temporal="none"))
    tok, exs = _examples(cfg)
    b = collate([exs[0]], tok.pad_token_id)
    nb = {k: v for k, v in b.items() if k != "context_images"}
    assert torch.allclose(model(**b).logits, single(**nb).logits, atol=1e-5)


def test_broken_checkpoint_directories(tiny_molmo, tmp_path):
    cfg, sd, d = tiny_molmo
    import shutil

    shard_dir = tmp_path / "shards"
    shutil.copytree(d, shard_dir)
    first = sorted(shard_dir.glob("*.safetensors"))[0]
    data = first.read_bytes()
    first.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_molmo_checkpoint(shard_dir, cfg)
    first.unlink()
    with pytest.raises(CheckpointError, match="missing shard"):
        load_molmo_checkpoint(shard_dir, cfg)
    first.write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError, match="unreadable|truncated"):
        load_molmo_checkpoint(shard_dir, cfg)
    with pytest.raises(CheckpointError, match="does not match the weights"):
        load_molmo_checkpoint(d, cfg.replace(projector_hidden=40))
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="pickle files are not loaded"):
        load_molmo_checkpoint(tmp_path / "pickled", cfg)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_molmo_checkpoint(tmp_path / "nowhere", cfg)
    (d / "config.json").write_text(json.dumps({"hidden_size": 64}))
    try:
        with pytest.raises(CheckpointError, match="hidden_size=64"):
            load_molmo_checkpoint(d, cfg)
    finally:
        (d / "config.json").unlink()


def _write_hf_tokenizer(directory, with_image_tokens=True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "User": 1, ":": 2, "Assistant": 3, "red": 4, "[UNK]": 5}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", unk_token="[UNK]")
    if with_image_tokens:
        hf.add_special_tokens({"additional_special_tokens": ["<im_start>", "<im_end>", "<im_patch>", "<im_col>"]})
    hf.save_pretrained(str(directory))


def test_tokenizer_comes_from_the_checkpoint_directory(tiny_molmo, tmp_path):
    import shutil

    from videomolmo.model import load_hf_tokenizer

    cfg, sd, d = tiny_molmo
    ck = tmp_path / "ck"
    shutil.copytree(d, ck)
    _write_hf_tokenizer(ck)
    hf_cfg = cfg.replace(tokenizer="hf")
    model = load_molmo_checkpoint(ck, hf_cfg)
    tok = model.tokenizer
    assert (tok.im_start_id, tok.im_end_id, tok.im_patch_id, tok.im_col_id) == (6, 7, 8, 9)
    assert tok.bos_token_id == tok.eos_token_id == 0  # no BOS: Molmo uses EOS in its place
    ex = model.processor(np.zeros((40, 40, 3), np.uint8), [], "red")
    assert ex["input_ids"][0] == 0 and ex["input_ids"][1] == tok.im_start_id
    prompt = tok.encode(" User: red Assistant:")
    assert ex["input_ids"][-len(prompt):].tolist() == prompt
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_hf_tokenizer(bare)
    _write_hf_tokenizer(bare, with_image_tokens=False)
    with pytest.raises(CheckpointError, match="no <im_start> token"):
        load_hf_tokenizer(bare)


def test_pad_embed_without_padding_config_is_named(tiny_molmo):
    cfg, sd, d = tiny_molmo
    nopad = cfg.replace(image_padding_embed="none")
    with pytest.raises(CheckpointError, match="pad_embed"):
        load_molmo_checkpoint(d, nopad)
    model = load_molmo_checkpoint(d, nopad, ignore_keys=["model.vision_backbone.pad_embed"])
    assert model.pad_embed is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_quantization_needs_cuda(tiny_molmo, tmp_path):
    from videomolmo.errors import ConfigError
    from videomolmo.model.checkpoint import quantize_llm_

    cfg, sd, d = tiny_molmo
    model = load_molmo_checkpoint(d, cfg)
    with pytest.raises(ConfigError, match="CUDA"):
        quantize_llm_(model, "4bit")
    with pytest.raises(ConfigError, match="8bit"):
        quantize_llm_(model, "3bit")


def test_load_in_bf16(tiny_molmo):
    cfg, sd, d = tiny_molmo
    model = load_molmo_checkpoint(d, cfg, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tok, exs = _examples(cfg)
    ref = reference_logits(sd, cfg, exs[0])
    ours = model(**collate([exs[0]], tok.pad_token_id)).logits[0].float()
    # bf16 keeps ~3 significant digits: same answer, not the same bits
    assert (ours - ref).abs().max() < 0.1 * ref.abs().max()
