"""The model's tokenizer: encode/decode with `tokenizers`, chat template, EOS ids, context.

Reads a Hugging Face style model folder: tokenizer.json, tokenizer_config.json (chat
template, bos/eos strings), chat_template.jinja when present (newer HF layout), and the
context length and EOS ids through `ModelConfig`, the engine's one reader of config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer

if TYPE_CHECKING:
    import llguidance

from fastserve.runtime.frontend.chat_template import ChatTemplate, pick_template_source
from fastserve.runtime.model.config import ModelConfig


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_string(value: Any) -> str:
    # tokenizer_config stores special tokens as strings or as serialized AddedToken dicts.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return ""


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the model the frontend needs besides the tokenizer."""

    max_model_len: int  # ModelConfig.max_position_embeddings
    eos_token_ids: tuple[int, ...]  # ModelConfig.eos_token_ids (config, generation config)
    model_type: str | None = None  # ModelConfig.model_type: the family (tool call format)


class ModelTokenizer:
    """Tokenizer plus chat template of one model."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        chat_template: ChatTemplate | None = None,
        eos_token_ids: tuple[int, ...] = (),
        max_model_len: int | None = None,
        model_type: str | None = None,
    ) -> None:
        self._tok = tokenizer
        self.chat_template = chat_template
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self.model_type = model_type
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._guidance: llguidance.LLTokenizer | None = None

    @property
    def chat_template_source(self) -> str | None:
        return None if self.chat_template is None else self.chat_template.source

    @property
    def template_shows_tools(self) -> bool:
        return self.chat_template is not None and self.chat_template.shows_tools

    def guidance_tokenizer(self) -> llguidance.LLTokenizer:
        """The tokenizer as llguidance sees it, to validate grammars (built at first use:
        about a quarter of a second for a 50k vocabulary)."""
        if self._guidance is None:
            import llguidance

            self._guidance = llguidance.LLTokenizer(
                self._tok.to_str(), eos_token=list(self.eos_token_ids) or None
            )
        return self._guidance

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> ModelTokenizer:
        root = Path(model_dir).expanduser()
        tok = Tokenizer.from_file(str(root / "tokenizer.json"))
        tok_cfg = _read_json(root / "tokenizer_config.json")
        bos = _token_string(tok_cfg.get("bos_token"))
        eos = _token_string(tok_cfg.get("eos_token"))
        source = pick_template_source(tok_cfg.get("chat_template"))
        jinja_file = root / "chat_template.jinja"
        if source is None and jinja_file.is_file():
            source = jinja_file.read_text(encoding="utf-8")
        template = ChatTemplate(source, bos_token=bos, eos_token=eos) if source else None
        info = read_model_info(root)
        eos_ids = list(info.eos_token_ids)
        # The tokenizer's own EOS may differ from config.json's (chat models often end turns
        # with a token like <|im_end|>); treat it as an end of generation too.
        eos_id = tok.token_to_id(eos) if eos else None
        if eos_id is not None and eos_id not in eos_ids:
            eos_ids.append(eos_id)
        return cls(
            tok,
            chat_template=template,
            eos_token_ids=tuple(eos_ids),
            max_model_len=info.max_model_len,
            model_type=info.model_type,
        )

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        """One token's text for logprob reports (may be a partial UTF-8 character)."""
        return self._tok.decode([token_id], skip_special_tokens=False)

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        if self.chat_template is None:
            raise ValueError("this model has no chat template")
        return self.chat_template.render(
            messages, add_generation_prompt=add_generation_prompt, tools=tools
        )

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        text = self.render_chat(messages, add_generation_prompt=add_generation_prompt, tools=tools)
        # The template writes BOS itself when the model wants one: add no special tokens twice.
        return self.encode(text, add_special_tokens=False)


def read_model_info(model_dir: str | Path) -> ModelInfo:
    """The model's facts as the engine reads them (`ModelConfig`: config.json, and
    generation_config.json's extra EOS ids), so the frontend and the workers agree."""
    cfg = ModelConfig.from_model_dir(Path(model_dir).expanduser())
    return ModelInfo(
        max_model_len=cfg.max_position_embeddings,
        eos_token_ids=tuple(cfg.eos_token_ids),
        model_type=cfg.model_type,
    )
