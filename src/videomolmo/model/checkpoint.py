"""Checkpoints: Molmo / VideoMolmo safetensors shards, and our own save / load.

Never unpickles: only safetensors (and JSON for configs and shard indexes).

`load_molmo_checkpoint(dir, config)` reads `model.safetensors.index.json` + shards (or a single
`model.safetensors`) written in Molmo's key layout and maps the keys onto our modules:

| Molmo key (prefix `model.`) | ours |
|---|---|
| `transformer.wte.embedding` / `.new_embedding` | `llm.model.embed_tokens.weight` / `new_embedding` |
| `transformer.blocks.N.att_proj` (q|k|v fused, with bias) | `llm.model.layers.N.self_attn.{q,k,v}_proj` |
| `transformer.blocks.N.attn_out` | `...self_attn.o_proj` |
| `transformer.blocks.N.ff_proj` (`x, gate = chunk(2)`) | `...mlp.up_proj` (first half), `gate_proj` (second) |
| `transformer.blocks.N.ff_out` | `...mlp.down_proj` |
| `transformer.blocks.N.attn_norm` / `ff_norm` | `...input_layernorm` / `post_attention_layernorm` |
| `transformer.ln_f` / `transformer.ff_out` | `llm.model.norm` / `llm.lm_head` |
| `vision_backbone.image_vit.patch_embedding` [D, p*p*3] as (dy, dx, c) | conv weight [D, 3, p, p] |
| `vision_backbone.image_vit.{class_embedding, positional_embedding, pre_ln}` | `vision.clip.embeddings.*`, `pre_layrnorm` |
| `...image_vit.transformer.resblocks.N.attention.{wq,wk,wv,wo}` | `...layers.N.self_attn.{q,k,v,out}_proj` |
| `...resblocks.N.{attention_norm, ffn_norm, feed_forward.w1, feed_forward.w2}` | `layer_norm1, layer_norm2, mlp.fc1, mlp.fc2` |
| `vision_backbone.{image_pooling_2d, image_projector, pad_embed}` | `pool`, `projector`, `pad_embed` |
| `vision_backbone.adapter.{wq,wk,wv,wo}` (VideoMolmo) | `temporal.*` |
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

import torch

from videomolmo.errors import CheckpointError, ConfigError
from videomolmo.files import atomic_path, atomic_write_text
from videomolmo.model.config import ModelConfig
from videomolmo.model.preprocess import Processor
from videomolmo.model.temporal import build_temporal
from videomolmo.model.tokenizer import build_tokenizer
from videomolmo.model.videomolmo import VideoMolmo

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FORMAT_TAG = "videomolmo"


# -- reading safetensors ----------------------------------------------------------------------------
class ShardReader:
    """Lazy access to the tensors of a safetensors checkpoint directory (sharded or not)."""

    def __init__(self, directory: str | Path) -> None:
        from safetensors import safe_open

        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise CheckpointError(f"{self.dir}: checkpoint directory does not exist")
        index = self.dir / INDEX_NAME
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
            files = sorted(set(weight_map.values()))
        elif (self.dir / WEIGHTS_NAME).exists():
            weight_map, files = None, [WEIGHTS_NAME]
        else:
            pickles = [p.name for p in self.dir.glob("*.bin")] + [p.name for p in self.dir.glob("*.pt")]
            hint = f" (found {', '.join(pickles)}: pickle files are not loaded, convert to safetensors)" if pickles else ""
            raise CheckpointError(f"{self.dir}: no {INDEX_NAME} or {WEIGHTS_NAME}{hint}")
        missing = [f for f in files if not (self.dir / f).exists()]
        if missing:
            raise CheckpointError(f"{self.dir}: missing shard(s) named in {INDEX_NAME}: {', '.join(missing)}")
        self.handles = {}
        self.key_file: dict[str, str] = {}
        for f in files:
            path = self.dir / f
            try:
                h = safe_open(str(path), framework="pt", device="cpu")
                keys = list(h.keys())
            except Exception as exc:  # safetensors raises its own error types for bad headers
                raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt?): {exc}") from None
            self._check_size(path, h, keys)
            self.handles[f] = h
            for k in keys:
                self.key_file[k] = f
        if weight_map is not None:
            absent = [k for k, f in weight_map.items() if self.key_file.get(k) != f]
            if absent:
                raise CheckpointError(
                    f"{self.dir}: {len(absent)} tensor(s) listed in {INDEX_NAME} are not in their shard, e.g. {absent[0]}"
                )

    @staticmethod
    def _check_size(path: Path, handle, keys: list[str]) -> None:
        # safe_open memory-maps lazily; a file cut short after the header only fails on access.
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        actual = path.stat().st_size
        if actual < 8 + header_len + end:
            raise CheckpointError(
                f"{path}: truncated safetensors file ({actual} bytes, header says {8 + header_len + end})"
            )

    def keys(self) -> list[str]:
        return list(self.key_file)

    def get(self, key: str) -> torch.Tensor:
        return self.handles[self.key_file[key]].get_tensor(key)


# -- key mapping ----------------------------------------------------------------------------------
def _molmo_rules(cfg: ModelConfig):
    """(regex on Molmo keys, function(match, tensor) -> list of (our key, tensor))."""
    c = cfg.llm
    hd = c.hidden // c.heads
    q_dim, kv_dim = c.hidden, c.kv_heads * hd
    p = cfg.vision.patch_size

    def one(name):
        return lambda m, t: [(name.format(*m.groups()), t)]

    def split_qkv(m, t):
        n = m.group(1)
        base = f"llm.model.layers.{n}.self_attn."
        q, k, v = torch.split(t, [q_dim, kv_dim, kv_dim], dim=0)
        kind = m.group(2)
        return [(base + f"q_proj.{kind}", q), (base + f"k_proj.{kind}", k), (base + f"v_proj.{kind}", v)]

    def split_ff(m, t):
        up, gate = t.chunk(2, dim=0)  # Molmo: x, gate = ff_proj(x).chunk(2); silu(gate) * x
        base = f"llm.model.layers.{m.group(1)}.mlp."
        return [(base + "up_proj.weight", up), (base + "gate_proj.weight", gate)]

    def patch(m, t):
        D = t.shape[0]
        return [("vision.clip.embeddings.patch_embedding.weight", t.reshape(D, p, p, 3).permute(0, 3, 1, 2))]

    vit = r"model\.vision_backbone\.image_vit\."
    blk = vit + r"transformer\.resblocks\.(\d+)\."
    ours_blk = "vision.clip.encoder.layers.{0}."
    attn_names = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "out_proj"}
    rules = [
        (r"model\.transformer\.wte\.embedding", one("llm.model.embed_tokens.weight")),
        (r"model\.transformer\.wte\.new_embedding", one("new_embedding")),
        (r"model\.transformer\.blocks\.(\d+)\.att_proj\.(weight|bias)", split_qkv),
        (r"model\.transformer\.blocks\.(\d+)\.attn_out\.weight", one("llm.model.layers.{0}.self_attn.o_proj.weight")),
        (r"model\.transformer\.blocks\.(\d+)\.ff_proj\.weight", split_ff),
        (r"model\.transformer\.blocks\.(\d+)\.ff_out\.weight", one("llm.model.layers.{0}.mlp.down_proj.weight")),
        (r"model\.transformer\.blocks\.(\d+)\.attn_norm\.weight", one("llm.model.layers.{0}.input_layernorm.weight")),
        (r"model\.transformer\.blocks\.(\d+)\.ff_norm\.weight",
         one("llm.model.layers.{0}.post_attention_layernorm.weight")),
        (r"model\.transformer\.ln_f\.weight", one("llm.model.norm.weight")),
        (r"model\.transformer\.ff_out\.weight", one("llm.lm_head.weight")),
        (vit + r"patch_embedding\.weight", patch),
        (vit + r"class_embedding", one("vision.clip.embeddings.class_embedding")),
        (vit + r"positional_embedding", one("vision.clip.embeddings.position_embedding.weight")),
        (vit + r"pre_ln\.(weight|bias)", one("vision.clip.pre_layrnorm.{0}")),
        (blk + r"attention\.(wq|wk|wv|wo)\.(weight|bias)",
         lambda m, t: [(ours_blk.format(m.group(1)) + f"self_attn.{attn_names[m.group(2)]}.{m.group(3)}", t)]),
        (blk + r"attention_norm\.(weight|bias)", one(ours_blk + "layer_norm1.{1}")),
        (blk + r"ffn_norm\.(weight|bias)", one(ours_blk + "layer_norm2.{1}")),
        (blk + r"feed_forward\.w1\.(weight|bias)", one(ours_blk + "mlp.fc1.{1}")),
        (blk + r"feed_forward\.w2\.(weight|bias)", one(ours_blk + "mlp.fc2.{1}")),
        (r"model\.vision_backbone\.pad_embed", one("pad_embed")),
        (r"model\.vision_backbone\.image_pooling_2d\.(wq|wk|wv|wo)\.(weight|bias)", one("pool.{0}.{1}")),
        (r"model\.vision_backbone\.image_projector\.(w1|w2|w3)\.weight", one("projector.{0}.weight")),
        (r"model\.vision_backbone\.adapter\.(wq|wk|wv|wo)\.weight", one("temporal.{0}.weight")),
    ]
    return [(re.compile(rx + r"$"), fn) for rx, fn in rules]


def map_molmo_state_dict(keys: Iterable[str], get, cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Molmo-layout tensors -> our state dict; returns (state dict, unmapped Molmo keys)."""
    rules = _molmo_rules(cfg)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key in keys:
        for rx, fn in rules:
            m = rx.match(key)
            if m:
                for name, t in fn(m, get(key)):
                    out[name] = t.contiguous()
                break
        else:
            unmapped.append(key)
    return out, unmapped


def _getter(reader: ShardReader, device, dtype):
    """Read one tensor, cast and move it at once, so the peak host memory is the converted model
    (a 7B fp32 checkpoint loaded as bf16 never exists in fp32 as a whole)."""

    def get(key: str) -> torch.Tensor:
        t = reader.get(key)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.to(device)

    return get


def _names(keys: list[str], n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _restore_buffers(model) -> None:
    """Non-persistent buffers are not in checkpoints; rebuild them after a meta-device build."""
    emb = model.vision.clip.embeddings
    emb.position_ids = torch.arange(emb.num_positions).expand((1, -1))
    rot = model.llm.model.rotary_emb
    inv_freq, scaling = rot.compute_default_rope_parameters(rot.config)
    rot.inv_freq = inv_freq
    rot.original_inv_freq = inv_freq.clone()
    rot.attention_scaling = scaling


def _load_into(model, state: dict[str, torch.Tensor], source: str, allow_missing: Iterable[str] = ()) -> None:
    expected = {k: v for k, v in model.state_dict().items()}
    allow = set(allow_missing)
    missing = [k for k in expected if k not in state and k not in allow]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: missing weights for {_names(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected weights {_names(unexpected)}")
    for k, t in state.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise CheckpointError(
                f"{source}: config {model.config.name!r} does not match the weights: {k} has shape "
                f"{tuple(t.shape)}, the config expects {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state, strict=False, assign=True)


def _build_empty(cfg: ModelConfig, init_modules: Iterable[str] = ()):
    """Build on the meta device (no memory); modules named in `init_modules` get real weights."""
    with torch.device("meta"):
        model = VideoMolmo(cfg)
    for name in init_modules:
        mod = model.get_submodule(name)
        mod.to_empty(device="cpu")
        mod.reset_parameters()
    return model


def _finish(model, device, dtype, directory=None):
    _restore_buffers(model)
    if dtype is not None:
        model.to(dtype)
    model.to(device)
    attach_processor(model, directory)
    return model.eval()


def attach_processor(model, directory=None) -> None:
    """Give a loaded model its `processor` (and `tokenizer`) when the tokenizer is available:
    always for byte-tokenizer presets, else from the checkpoint directory's tokenizer files."""
    cfg = model.config
    if cfg.tokenizer == "hf":
        d = Path(directory) if directory is not None else None
        if d is None or not any((d / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            return
    tok = build_tokenizer(cfg, directory)
    model.tokenizer = tok
    model.processor = Processor(cfg, tok)


def load_molmo_checkpoint(directory: str | Path, config: ModelConfig | str = "molmo-7b-d", *,
                          device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                          init_missing_temporal: bool = False, ignore_keys: Iterable[str] = ()):
    """Load Molmo-7B-D-0924 or VideoMolmo weights from a local directory of safetensors shards.

    A single-frame Molmo checkpoint has no temporal-module weights: that is an error unless
    `init_missing_temporal=True`, which initialises the module (`config.temporal_init`; use
    "zero" to start as the identity) for fine-tuning. `ignore_keys` names checkpoint keys
    to skip on purpose (e.g. `model.vision_backbone.pad_embed` with the `videomolmo-7b` preset,
    whose upstream model class does not use pad embeddings).
    """
    cfg = ModelConfig.from_name(config) if isinstance(config, str) else config
    reader = ShardReader(directory)
    _check_hf_config(Path(directory), cfg)
    skip = set(ignore_keys)
    keys = [k for k in reader.keys() if k not in skip]
    state, unmapped = map_molmo_state_dict(keys, _getter(reader, device, dtype), cfg)
    if unmapped:
        raise CheckpointError(f"{directory}: unexpected weights {_names(unmapped)}")
    if cfg.image_padding_embed == "none" and "pad_embed" in state:
        raise CheckpointError(
            f"{directory}: has model.vision_backbone.pad_embed but config {cfg.name!r} uses no pad embeddings; "
            "use a config with image_padding_embed='pad_and_partial_pad', or ignore_keys=['model.vision_backbone.pad_embed']"
        )
    has_temporal = any(k.startswith("temporal.") for k in state)
    init = []
    if _temporal_has_weights(cfg) and not has_temporal:
        if not init_missing_temporal:
            raise CheckpointError(
                f"{directory}: no temporal-module weights (model.vision_backbone.adapter.*): a single-frame "
                "Molmo checkpoint; pass init_missing_temporal=True to fine-tune from it, or a config with temporal='none'"
            )
        init = ["temporal"]
    model = _build_empty(cfg, init)
    allow = [k for k in model.state_dict() if k.startswith("temporal.")] if init else []
    _load_into(model, state, str(directory), allow_missing=allow)
    return _finish(model, device, dtype, directory)


def _temporal_has_weights(cfg: ModelConfig) -> bool:
    with torch.device("meta"):
        return any(True for _ in build_temporal(cfg).parameters())


def _check_hf_config(directory: Path, cfg: ModelConfig) -> None:
    path = directory / CONFIG_NAME
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if data.get("format") == FORMAT_TAG:
        return
    checks = {"hidden_size": cfg.llm.hidden, "num_hidden_layers": cfg.llm.layers,
              "num_attention_heads": cfg.llm.heads, "num_key_value_heads": cfg.llm.kv_heads,
              "intermediate_size": 2 * cfg.llm.intermediate}
    for key, want in checks.items():
        if key in data and key != "intermediate_size" and int(data[key]) != want:
            raise CheckpointError(f"{path}: {key}={data[key]} but config {cfg.name!r} has {want}")
    if "intermediate_size" in data and int(data["intermediate_size"]) not in (want := checks["intermediate_size"], want // 2):
        raise CheckpointError(
            f"{path}: intermediate_size={data['intermediate_size']} does not match config {cfg.name!r}"
        )


# -- our own format ----------------------------------------------------------------------------
def save_pretrained(model, directory: str | Path, metadata: dict[str, str] | None = None,
                    trained_on: list[dict] | None = None) -> Path:
    """Write `config.json` + `model.safetensors` into `directory`, each atomically; `trained_on`
    (the data streams behind the weights, `videomolmo.training.lineage`) goes into the config."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
             if k not in _non_persistent(model)}
    config = {"format": FORMAT_TAG, "model": model.config.to_dict()}
    if trained_on is not None:
        config["trained_on"] = trained_on
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))
    return out


def _non_persistent(model) -> set[str]:
    names = set()
    for mname, mod in model.named_modules():
        for b in getattr(mod, "_non_persistent_buffers_set", ()):
            names.add(f"{mname}.{b}" if mname else b)
    return names


def read_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_NAME
    if not path.exists():
        raise CheckpointError(f"{Path(directory)}: no {CONFIG_NAME}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if data.get("format") != FORMAT_TAG or "model" not in data:
        raise CheckpointError(f"{path}: not a videomolmo config (use load_molmo_checkpoint for Molmo weights)")
    try:
        return ModelConfig.from_dict(data["model"])
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: bad model config: {exc}") from None


def from_pretrained(directory: str | Path, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None, config: ModelConfig | None = None,
                    quantization: str | None = None):
    """Load a model written by `save_pretrained` (or a directory of our shards).

    `config` overrides the stored one (its shapes must match the weights).
    `quantization="8bit"|"4bit"` swaps the LLM's linear layers for bitsandbytes ones (CUDA only).
    """
    cfg = config if config is not None else read_config(directory)
    reader = ShardReader(directory)
    get = _getter(reader, device, dtype)
    state = {k: get(k) for k in reader.keys()}
    model = _build_empty(cfg)
    _load_into(model, state, str(directory))
    model = _finish(model, device, dtype, directory)
    if quantization:
        quantize_llm_(model, quantization)
    return model


def quantize_llm_(model, mode: str) -> None:
    """Replace the decoder's linear layers with bitsandbytes 8-bit / 4-bit ones (needs CUDA)."""
    if mode not in ("8bit", "4bit"):
        raise ConfigError(f"quantization must be '8bit' or '4bit', got {mode!r}")
    if not torch.cuda.is_available():
        raise ConfigError("bitsandbytes quantization needs a CUDA GPU")
    try:
        import bitsandbytes as bnb  # optional, not a dependency
    except ImportError:
        raise ConfigError("quantization needs the optional package bitsandbytes (pip install bitsandbytes)") from None
    from torch import nn

    for name, mod in list(model.llm.model.layers.named_modules()):
        for child_name, child in list(mod.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            if mode == "8bit":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None,
                                          has_fp16_weights=False)
                new.weight = bnb.nn.Int8Params(child.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                        compute_dtype=torch.bfloat16, quant_type="nf4")
                new.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                new.bias = nn.Parameter(child.bias.data, requires_grad=False)
            setattr(mod, child_name, new.to("cuda"))
