"""Tool calls in generated text, by model family: a small registry of formats.

A format says how calls look in the output (its parser, fed streamed text), how a forced
call is written as a grammar (tool_choice "required" or a named function), and whether the
prompt must describe the tools itself (templates that have no tool section of their own).

- `hermes`: `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, any number,
  anywhere in the text (Hermes, Qwen2/2.5, and SmolLM2 whose template has no tool format:
  there the tools are described in the system prompt the Hermes/Qwen way, see tool_request).
- `llama3_json`: the whole output is `{"name": ..., "parameters": {...}}` (Llama 3.1+ JSON
  tool calling; `;` separates several).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class ToolCall:
    id: str  # "call_..." as OpenAI's
    name: str
    arguments: str  # JSON text of the arguments object

    def to_dict(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {} if index is None else {"index": index}
        out.update(
            {"id": self.id, "type": "function",
             "function": {"name": self.name, "arguments": self.arguments}}
        )  # fmt: skip
        return out


class ToolParser(Protocol):
    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """New stable text in; (content safe to show now, calls completed now) out."""
        ...

    def flush(self) -> tuple[str, list[ToolCall]]:
        """The output ended: whatever is left."""
        ...


def _call(obj: Any, args_key: str) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    text = json.dumps(args, ensure_ascii=False)
    return ToolCall("call_" + secrets.token_hex(12), obj["name"], text)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


class HermesParser:
    START, END = "<tool_call>", "</tool_call>"

    def __init__(self) -> None:
        self._buf = ""
        self._in_call = False
        self._held_space = ""  # whitespace next to a call is not content
        self._after_call = False  # drop the whitespace that follows a call
        self._pre_space = ""  # the whitespace before the call being read
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._buf += text
        content, calls = "", []
        while True:
            if not self._in_call:
                at = self._buf.find(self.START)
                if at < 0:
                    keep = _partial_suffix(self._buf, self.START)
                    content += self._content(self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep :]
                    break
                before = self._buf[:at]
                stripped = before.rstrip()
                content += self._content(stripped) if stripped else ""
                # Whitespace before a call is dropped, unless the call turns out not to be one.
                self._pre_space = self._held_space + before[len(stripped) :]
                self._held_space = ""
                self._buf, self._in_call = self._buf[at + len(self.START) :], True
                continue
            end = self._buf.find(self.END)
            if end < 0:
                break
            body, self._buf = self._buf[:end], self._buf[end + len(self.END) :]
            self._in_call = False
            call = _call(_loads(body.strip()), "arguments")
            if call is None:  # not a call after all: show it as it was written
                content += self._content(self._pre_space + self.START + body + self.END)
            else:
                calls.append(call)
                self.calls += 1
                self._after_call = True
        return content, calls

    def flush(self) -> tuple[str, list[ToolCall]]:
        rest, self._buf = self._buf, ""
        if self._in_call:  # an unclosed call: complete when its JSON is
            self._in_call = False
            call = _call(_loads(rest.strip()), "arguments")
            if call is not None:
                self.calls += 1
                return "", [call]
            rest = self._pre_space + self.START + rest
        held, self._held_space = self._held_space, ""
        return ("" if self.calls and not rest.strip() else held + rest), []

    def _content(self, text: str) -> str:
        """Hold trailing whitespace back until more content follows (or a call drops it)."""
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        if not text:
            return ""
        if not text.strip():
            self._held_space += text
            return ""
        stripped = text.rstrip()
        out = self._held_space + stripped
        self._held_space = text[len(stripped) :]
        return out


class Llama3JsonParser:
    """Streams text as content unless the output starts like a JSON call; then waits for
    the end to parse it."""

    def __init__(self) -> None:
        self._buf = ""
        self._mode: str | None = None  # None: undecided; "text" or "json"
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        if self._mode == "text":
            return text, []
        self._buf += text
        head = self._buf.lstrip()
        if not head:
            return "", []
        if head.startswith("{"):
            self._mode = "json"
            return "", []
        self._mode, out, self._buf = "text", self._buf, ""
        return out, []

    def flush(self) -> tuple[str, list[ToolCall]]:
        rest, self._buf = self._buf, ""
        if self._mode != "json":
            return rest, []
        calls = [_call(_loads(part.strip()), "parameters") for part in rest.split(";")]
        if not calls or any(c is None for c in calls):
            return rest, []
        self.calls = len(calls)
        return "", [c for c in calls if c is not None]


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-k:]):
            return k
    return 0


def _call_schema(tool: dict[str, Any], args_key: str) -> dict[str, Any]:
    fn = tool["function"]
    params = fn.get("parameters") or {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": fn["name"]}, args_key: params},
        "required": ["name", args_key],
        "additionalProperties": False,
    }


def _hermes_grammar(tools: list[dict[str, Any]]) -> str:
    from fastserve.runtime.frontend.guided import JSON_OPTIONS, lark_grammar

    schema = {"anyOf": [_call_schema(t, "arguments") for t in tools]}
    if len(tools) == 1:
        schema = _call_schema(tools[0], "arguments")
    schema["x-guidance"] = dict(JSON_OPTIONS)
    lark = 'start: "<tool_call>\\n" call "\\n</tool_call>"\ncall: %json ' + json.dumps(schema)
    return lark_grammar(lark)


def _llama3_grammar(tools: list[dict[str, Any]]) -> str:
    from fastserve.runtime.frontend.guided import json_schema_grammar

    schemas = [_call_schema(t, "parameters") for t in tools]
    return json_schema_grammar(schemas[0] if len(schemas) == 1 else {"anyOf": schemas})


@dataclass(frozen=True)
class ToolFormat:
    name: str
    parser: Callable[[], ToolParser]
    forced_grammar: Callable[[list[dict[str, Any]]], str]  # one call to one of these tools


TOOL_FORMATS: dict[str, ToolFormat] = {
    "hermes": ToolFormat("hermes", HermesParser, _hermes_grammar),
    "llama3_json": ToolFormat("llama3_json", Llama3JsonParser, _llama3_grammar),
}
# config.json model_type -> format, for templates that do not show theirs. SmolLM2 (llama)
# has no tool format at all: it gets Hermes, described in the prompt.
FAMILY_FORMATS = {"qwen2": "hermes", "qwen3": "hermes", "llama": "hermes", "mistral": "hermes"}


def tool_format_for(template_source: str | None, model_type: str | None) -> ToolFormat:
    """The format of this model: its chat template's own, else its family's."""
    source = template_source or ""
    if "<tool_call>" in source:
        return TOOL_FORMATS["hermes"]
    if "<|python_tag|>" in source or "ipython" in source:
        return TOOL_FORMATS["llama3_json"]
    return TOOL_FORMATS[FAMILY_FORMATS.get(model_type or "", "hermes")]
