"""Pieces for tiny random-initialised Hugging Face checkpoints (tests, `gpu_check.py --tiny`)."""

from __future__ import annotations

from typing import Any, Sequence


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
