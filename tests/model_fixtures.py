"""The tests' one tiny model builder: a Hugging Face model directory in milliseconds.

`make_tiny_llama_dir` writes everything a real directory holds (config.json,
model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json with a chat
template), so loaders, tokenizers and whole server processes can be tested without the real
model. Its default tokenizer follows SmolLM2's layout: 0 <|endoftext|>, 1 <|im_start|> (bos),
2 <|im_end|> (eos), then the 256 byte tokens, then a few merges.

`write_tiny_model` is the frontend tests' variant of the same directory: no weights, a
byte-level BPE trained on a fixed ASCII corpus (so ASCII text merges while non-ASCII
characters stay split into byte tokens: exactly the case incremental detokenization must
get right) and SmolLM2-Instruct's ChatML template with its default system prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

if TYPE_CHECKING:
    import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("Ġt", "he")]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# ChatML with SmolLM2-Instruct's default system prompt (write_tiny_model's template).
SYSTEM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. Tell me a story about a cat and a dog.",
    "system user assistant: hello there, how are you today? I am fine, thanks.",
    "Once upon a time there was a little model that served tokens very fast.",
    "STOP stop END end 0123456789 .,;:!?()[]{}<>'\"-_+=*/\\|@#$%^&~`",
]

TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order: printable bytes
    stand for themselves, the others map to 256, 257, ... in byte order."""
    printable = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    chars: list[str] = []
    for b in range(256):
        chars.append(
            chr(b) if b in printable else chr(256 + b - sum(1 for p in printable if p < b))
        )
    return chars


def tiny_tokenizer() -> Tokenizer:
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in _byte_alphabet():
        vocab[ch] = len(vocab)
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(MERGES), fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def trained_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE trained on `_CORPUS`: the special tokens first (ids 0-2), then
    merges of the corpus' ASCII text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return tok


def _random_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    hidden = config["hidden_size"]
    ffn = config["intermediate_size"]
    hd = config["head_dim"]
    q = config["num_attention_heads"] * hd
    kv = config["num_key_value_heads"] * hd
    vocab = config["vocab_size"]

    def rand(*shape: int, std: float = 0.08) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def norm() -> torch.Tensor:
        return 1.0 + rand(hidden, std=0.1)

    out = {"model.embed_tokens.weight": rand(vocab, hidden, std=1.0), "model.norm.weight": norm()}
    if not config["tie_word_embeddings"]:
        out["lm_head.weight"] = rand(vocab, hidden, std=0.3)
    qwen2 = config.get("model_type") == "qwen2"
    bias = config.get("attention_bias", False) or qwen2
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = norm()
        out[p + "post_attention_layernorm.weight"] = norm()
        # Large enough that attention is far from uniform: a wrong mask or position shows.
        out[p + "self_attn.q_proj.weight"] = rand(q, hidden, std=0.3)
        out[p + "self_attn.k_proj.weight"] = rand(kv, hidden, std=0.3)
        out[p + "self_attn.v_proj.weight"] = rand(kv, hidden, std=0.2)
        out[p + "self_attn.o_proj.weight"] = rand(hidden, q, std=0.1)
        out[p + "mlp.gate_proj.weight"] = rand(ffn, hidden, std=0.15)
        out[p + "mlp.up_proj.weight"] = rand(ffn, hidden, std=0.15)
        out[p + "mlp.down_proj.weight"] = rand(hidden, ffn, std=0.1)
        if bias:
            # Qwen2 has q/k/v biases only; Llama's attention_bias adds o_proj's too.
            names = (("q", q), ("k", kv), ("v", kv)) + (() if qwen2 else (("o", hidden),))
            for name, size in names:
                out[p + f"self_attn.{name}_proj.bias"] = rand(size, std=0.1)
    return out


def make_tiny_llama_dir(
    path: str | Path,
    seed: int = 0,
    *,
    tokenizer: Tokenizer | None = None,
    chat_template: str = CHAT_TEMPLATE,
    weights: bool = True,
    **overrides: Any,
) -> Path:
    """Write a tiny random Llama model directory at `path` (created if needed); return it.

    `tokenizer` defaults to `tiny_tokenizer()`; `weights=False` leaves out
    model.safetensors (enough for the frontend, which only tokenizes). `overrides` replace
    config.json entries (e.g. tie_word_embeddings=True, rope_scaling=...).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer() if tokenizer is None else tokenizer
    config = dict(TINY_CONFIG, vocab_size=tokenizer.get_vocab_size(), **overrides)
    if weights:
        from safetensors.torch import save_file

        weights_file = str(path / "model.safetensors")
        save_file(_random_weights(config, seed), weights_file, {"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": 1, "eos_token_id": 2}
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer.save(str(path / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return path


def write_tiny_model(directory: str | Path, *, max_position_embeddings: int = 256) -> Path:
    """The frontend tests' tiny model directory: `trained_tokenizer()` (vocabulary of 400),
    `SYSTEM_CHAT_TEMPLATE`, no weights."""
    return make_tiny_llama_dir(
        directory,
        tokenizer=trained_tokenizer(),
        chat_template=SYSTEM_CHAT_TEMPLATE,
        weights=False,
        max_position_embeddings=max_position_embeddings,
    )
