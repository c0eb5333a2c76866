"""Tokenizers: a byte-level one that needs no files (tiny presets) and a checkpoint's HF one.

Both expose the same small interface the processor and `point_video` use: `encode(text)`,
`decode(ids)`, `bos_token_id`, `eos_token_id`, `pad_token_id` and the ids of Molmo's image
special tokens (`im_start_id`, `im_end_id`, `im_patch_id`, `im_col_id`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

from videomolmo.errors import CheckpointError, ConfigError

IM_START, IM_END, IM_PATCH, IM_COL, IMAGE_PROMPT = (
    "<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<|image|>",
)
IMAGE_SPECIAL_TOKENS = (IM_START, IM_END, IM_PATCH, IM_COL, IMAGE_PROMPT)


class Tokenizer(Protocol):
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    im_start_id: int
    im_end_id: int
    im_patch_id: int
    im_col_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, then `<|endoftext|>` (BOS and EOS) and a pad token.

    The image special tokens live in the additional-vocabulary rows after `vocab_size`, as in
    Molmo, so they are never predicted by the LM head.
    """

    def __init__(self, vocab_size: int = 264) -> None:
        if vocab_size < 258:
            raise ConfigError(f"byte tokenizer needs vocab_size >= 258, got {vocab_size}")
        self.vocab_size = vocab_size
        self.eos_token_id = 256
        self.bos_token_id = 256
        self.pad_token_id = 257
        base = vocab_size
        self.im_start_id, self.im_end_id, self.im_patch_id, self.im_col_id, self.image_prompt_id = (
            base + i for i in range(5)
        )

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        # Specials and non-byte ids are dropped; broken UTF-8 sequences become U+FFFD.
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A checkpoint's own tokenizer (Molmo: Qwen2 plus the image special tokens), files only."""

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        ids = {}
        for tok in (IM_START, IM_END, IM_PATCH, IM_COL):
            tid = hf_tokenizer.convert_tokens_to_ids(tok)
            if tid is None or tid == hf_tokenizer.unk_token_id:
                raise CheckpointError(f"tokenizer has no {tok} token; not a Molmo tokenizer")
            ids[tok] = int(tid)
        self.im_start_id, self.im_end_id = ids[IM_START], ids[IM_END]
        self.im_patch_id, self.im_col_id = ids[IM_PATCH], ids[IM_COL]
        eos = hf_tokenizer.eos_token_id
        if eos is None:
            raise CheckpointError("tokenizer has no EOS token")
        self.eos_token_id = int(eos)
        # Qwen2 has no BOS; Molmo uses EOS in its place.
        self.bos_token_id = int(hf_tokenizer.bos_token_id if hf_tokenizer.bos_token_id is not None else eos)
        pad = hf_tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else eos)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)


def load_hf_tokenizer(checkpoint_dir: str | Path) -> HFTokenizer:
    """Load the tokenizer stored in a checkpoint directory (never from the network)."""
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json)")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types for broken files
        raise CheckpointError(f"{path}: cannot load tokenizer: {exc}") from None
    return HFTokenizer(tok)


def build_tokenizer(config, checkpoint_dir: str | Path | None = None) -> Tokenizer:
    """The tokenizer a config asks for: bytes (no files) or the checkpoint directory's."""
    if config.tokenizer == "bytes":
        return ByteTokenizer(config.llm.vocab_size)
    if checkpoint_dir is None:
        raise ConfigError(
            f"model config {config.name!r} uses the checkpoint's tokenizer; pass the checkpoint directory"
        )
    return load_hf_tokenizer(checkpoint_dir)
