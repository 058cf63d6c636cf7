"""A tiny byte-level BPE model folder (tokenizer + configs, no weights) for tests and demos.

Trained in milliseconds on a fixed ASCII corpus, so non-ASCII characters stay split into
byte tokens: exactly the case incremental detokenization must get right.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# ChatML, like SmolLM2-Instruct's template.
CHAT_TEMPLATE = (
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


def build_tiny_tokenizer(vocab_size: int = 400) -> Tokenizer:
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


def write_tiny_model(directory: str | Path, *, max_position_embeddings: int = 256) -> Path:
    """Write tokenizer.json, tokenizer_config.json and config.json into `directory`."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer()
    tok.save(str(root / "tokenizer.json"))
    eos_id = tok.token_to_id("<|im_end|>")
    tok_cfg = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "chat_template": CHAT_TEMPLATE,
    }
    (root / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": max_position_embeddings,
        "eos_token_id": eos_id,
        "bos_token_id": tok.token_to_id("<|im_start|>"),
        "vocab_size": tok.get_vocab_size(),
    }
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root
