"""The frontend's tokenizer wrapper: model folder loading and chat templates."""

from __future__ import annotations

import json

import pytest

from fastserve.runtime.frontend.chat_template import ChatTemplate, TemplateError
from fastserve.runtime.frontend.tokenizer import ModelTokenizer, read_model_info
from tests.model_fixtures import write_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny"), max_position_embeddings=128)


def test_loads_folder_facts(model_dir):
    tok = ModelTokenizer.from_dir(model_dir)
    assert tok.max_model_len == 128
    assert tok.eos_token_ids == (tok.encode("<|im_end|>", add_special_tokens=False)[0],)
    assert tok.decode(tok.encode("Hello wörld")) == "Hello wörld"
    assert tok.vocab_size == 400


def test_generation_config_and_tokenizer_eos_are_merged(tmp_path):
    root = write_tiny_model(tmp_path)
    cfg = json.loads((root / "config.json").read_text())
    cfg["eos_token_id"] = 0  # <|endoftext|>, while the tokenizer's EOS is <|im_end|> (2)
    (root / "config.json").write_text(json.dumps(cfg))
    (root / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, 1]}))
    assert read_model_info(root).eos_token_ids == (0, 1)
    assert ModelTokenizer.from_dir(root).eos_token_ids == (0, 1, 2)


def test_chat_template_renders_generation_prompt_and_special_tokens(model_dir):
    tok = ModelTokenizer.from_dir(model_dir)
    messages = [{"role": "user", "content": "hi"}]
    text = tok.render_chat(messages)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.encode_chat(messages)
    assert ids[0] == 1 and ids.count(2) == 2  # special tokens encoded as single ids
    without = tok.render_chat(messages, add_generation_prompt=False)
    assert not without.endswith("assistant\n")


def test_template_helpers():
    source = (
        "{{ bos_token }}{% if messages|length > 1 %}{{ raise_exception('one message only') }}"
        "{% endif %}{{ messages[0] | tojson }}|{{ strftime_now('%Y') | length }}"
    )
    tmpl = ChatTemplate(source, bos_token="<s>")
    out = tmpl.render([{"role": "user", "content": "é"}])
    assert out == '<s>{"role": "user", "content": "é"}|4'
    with pytest.raises(TemplateError, match="one message only"):
        tmpl.render([{"role": "user", "content": "a"}] * 2)


def test_template_is_sandboxed():
    tmpl = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError):
        tmpl.render([])


def test_chat_template_file_and_named_list(tmp_path):
    root = write_tiny_model(tmp_path)
    cfg = json.loads((root / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "default", "template": "D{{ messages[0].content }}"}]
    (root / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert ModelTokenizer.from_dir(root).render_chat([{"role": "user", "content": "x"}]) == "Dx"
    del cfg["chat_template"]
    (root / "tokenizer_config.json").write_text(json.dumps(cfg))
    (root / "chat_template.jinja").write_text("J{{ messages[0].content }}")
    assert ModelTokenizer.from_dir(root).render_chat([{"role": "user", "content": "y"}]) == "Jy"
