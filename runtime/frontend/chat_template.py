"""Chat template rendering (the Jinja2 templates shipped in Hugging Face model folders).

Mirrors what `transformers` provides to templates so that real model templates render the
same prompt: a sandboxed environment with trim_blocks/lstrip_blocks, `raise_exception`,
`strftime_now` and a `tojson` that does not HTML-escape.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """The template refused the conversation (e.g. roles that do not alternate)."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


class ChatTemplate:
    """A compiled chat template plus the special-token strings templates expect."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        # The sandbox matters: the template comes from a downloaded model folder.
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        self._template = env.from_string(source)
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    @property
    def shows_tools(self) -> bool:
        """Whether the template has a tool section of its own (it reads `tools`)."""
        return "tools" in self.source

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        extra = {} if tools is None else {"tools": tools}
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateError:
            raise
        except (jinja2.TemplateError, TypeError, KeyError) as exc:
            # A template bug or a message shape it cannot handle: the client's fix either way.
            raise TemplateError(f"the chat template failed: {exc}") from exc


def pick_template_source(value: Any) -> str | None:
    """tokenizer_config.json's `chat_template`: a string, or a list of named templates."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default")
        return chosen if isinstance(chosen, str) else None
    return None
