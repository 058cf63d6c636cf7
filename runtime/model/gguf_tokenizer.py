"""Rebuild a Hugging Face `tokenizer.json` (and its config) from a GGUF file's vocabulary.

GGUF stores a GPT-2 style byte-level BPE as three arrays (tokens, token types, merges) plus
ids of the special tokens; the `tokenizers` library rebuilds the same tokenizer from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFReader, TokenType
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

# llama.cpp pre-tokenizer names whose split rule is "each digit alone, then GPT-2's regex":
# in tokenizers terms Digits(individual_digits) followed by ByteLevel(use_regex).
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}
_GPT2_PRE = {"gpt2", "default", "mpt", "olmo"}


def field_value(reader: GGUFReader, key: str, default: Any = None) -> Any:
    """A scalar, string or array metadata value of the GGUF file, or `default`."""
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _DIGIT_SPLIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _GPT2_PRE:
        return byte_level
    raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported by the converter")


def build_tokenizer(reader: GGUFReader) -> Tokenizer:
    """The byte-level BPE tokenizer that the GGUF vocabulary describes."""
    model_kind = field_value(reader, "tokenizer.ggml.model")
    if model_kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {model_kind!r} is not supported (only 'gpt2' BPE)")
    tokens: list[str] = field_value(reader, "tokenizer.ggml.tokens")
    types: list[int] = field_value(reader, "tokenizer.ggml.token_type")
    merges_raw: list[str] = field_value(reader, "tokenizer.ggml.merges", [])
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in merges_raw]
    unk_id = field_value(reader, "tokenizer.ggml.unknown_token_id")
    bpe = models.BPE(
        vocab=vocab,
        merges=merges,
        unk_token=tokens[unk_id] if unk_id is not None else None,
        fuse_unk=False,
        byte_fallback=False,
    )
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = _pre_tokenizer(field_value(reader, "tokenizer.ggml.pre", "gpt2"))
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # Control tokens must never be split by the BPE: register them as special added tokens
    # (they keep their ids because they are already in the vocabulary).
    tok.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, kind in enumerate(types)
            if kind == TokenType.CONTROL
        ]
    )
    # User-defined tokens are matched whole too, but decode like ordinary text.
    tok.add_tokens(
        [
            AddedToken(tokens[i], special=False, normalized=False)
            for i, kind in enumerate(types)
            if kind == TokenType.USER_DEFINED
        ]
    )
    return tok


def special_token_ids(reader: GGUFReader) -> dict[str, int]:
    """bos/eos/unk/pad ids as GGUF records them (missing ones are left out)."""
    out = {}
    for name in ("bos", "eos", "unknown", "padding"):
        value = field_value(reader, f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            out[name] = int(value)
    return out


def write_tokenizer_files(reader: GGUFReader, out_dir: Path, max_length: int) -> dict[str, int]:
    """Write tokenizer.json and tokenizer_config.json; return the special token ids."""
    tokenizer = build_tokenizer(reader)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokens: list[str] = field_value(reader, "tokenizer.ggml.tokens")
    ids = special_token_ids(reader)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": bool(field_value(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(field_value(reader, "tokenizer.ggml.add_eos_token", False)),
    }
    for name, key in (("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token")):
        if name in ids:
            config[key] = tokens[ids[name]]
    if "padding" in ids:
        config["pad_token"] = tokens[ids["padding"]]
    template = field_value(reader, "tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ids
