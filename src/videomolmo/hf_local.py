"""Loading native transformers models and tokenizers from local folders only (no hub access,
no remote code, safetensors only), with one-line `CheckpointError`s; plus tiny tokenizers for
random-initialised test checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from videomolmo.errors import CheckpointError


def load_native_model(model_class: Any, root: Path, label: str, dtype: Any) -> Any:
    """`model_class.from_pretrained(root)` refusing a folder whose weights do not fill the config.

    transformers only warns about missing or mismatched tensors (it initialises them randomly),
    which would make a broken download look like a working model."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model, info = model_class.from_pretrained(str(root), local_files_only=True, trust_remote_code=False,
                                                  use_safetensors=True, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{root}: cannot load the {label} checkpoint ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        what = missing[:3] if missing else [str(m) for m in mismatched[:3]]
        raise CheckpointError(f"{root}: weights do not match config.json ({len(missing)} missing, "
                              f"{len(mismatched)} mismatched tensors, e.g. {what})")
    return model


def load_local_tokenizer(root: Path, label: str) -> Any:
    """The folder's tokenizer (`tokenizer.json` / `tokenizer_config.json`) via `AutoTokenizer`."""
    if not (root / "tokenizer.json").is_file() and not (root / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{root}: no tokenizer.json / tokenizer_config.json in the {label} checkpoint directory")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{root}: cannot load the {label} tokenizer ({str(exc).splitlines()[0]})") from None


def byte_level_tokenizer(special_tokens: Sequence[str], **roles: str) -> Any:
    """A `PreTrainedTokenizerFast` with one token per byte (256) plus `special_tokens`, needing no
    vocabulary files; `roles` are e.g. eos_token="<|im_end|>", pad_token="<pad>"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(special_tokens))
    return PreTrainedTokenizerFast(tokenizer_object=tk, **roles)
