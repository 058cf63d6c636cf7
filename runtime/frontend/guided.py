"""Structured output requests: `response_format` into an llguidance grammar, validated here.

The grammar travels in SamplingParams to the worker, which masks the logits with it
(runtime/model/grammar.py). Validating against the model's tokenizer before anything is
queued makes an invalid schema a 400 naming the problem, never a failed job.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import llguidance

from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.fields import get_dict, get_str, json_type

# Compact separators with no free whitespace: the output reads like json.dumps's, and a model
# cannot pad it with whitespace forever (a real risk for small models under a mask).
JSON_OPTIONS: llguidance.JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
MAX_SCHEMA_CHARS = 65536  # a schema's JSON text; compiling cost grows with it


class GuidanceSource(Protocol):
    """Where the llguidance tokenizer comes from (ModelTokenizer; built only when needed)."""

    def guidance_tokenizer(self) -> llguidance.LLTokenizer: ...


def json_schema_grammar(schema: Any) -> str:
    """The llguidance grammar (JSON text) of a JSON schema; ValueError when not JSON."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return llguidance.LLMatcher.grammar_from_json_schema(text, defaults=JSON_OPTIONS)


def lark_grammar(lark: str) -> str:
    return llguidance.LLMatcher.grammar_from_lark(lark)


def check_grammar(grammar: str, tokenizer: llguidance.LLTokenizer, param: str) -> None:
    """RequestError (400) unless the grammar compiles for this tokenizer."""
    error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
    if error and not error.startswith("WARNING"):
        # The first line says what is wrong; the rest quotes the generated grammar.
        reason = re.sub(r"^at \d+\(\d+\): ", "", error.strip().splitlines()[0])
        raise RequestError(f"`{param}` holds an invalid JSON schema: {reason}", param=param)


def response_format_grammar(body: dict[str, Any], tokenizer: GuidanceSource) -> str | None:
    """The grammar `response_format` asks for; None for plain text."""
    fmt = get_dict(body, "response_format")
    if fmt is None:
        return None
    kind = get_str(fmt, "type") or "text"
    param = "response_format"
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise RequestError(
                f"`response_format.json_schema` must be an object, got {json_type(spec)}",
                param=param,
            )
        schema = spec.get("schema")
        if not isinstance(schema, dict | bool):
            raise RequestError(
                "`response_format.json_schema.schema` must be a JSON schema object, got "
                f"{json_type(schema)}",
                param=param,
            )
    else:
        raise RequestError(
            f"`response_format.type` is `{kind}`: expected `text`, `json_object` or `json_schema`",
            param=param,
        )
    return schema_grammar(schema, tokenizer.guidance_tokenizer(), param)


def schema_grammar(schema: Any, tokenizer: llguidance.LLTokenizer, param: str) -> str:
    """A validated grammar for a JSON schema (object or boolean)."""
    text = json.dumps(schema)
    if len(text) > MAX_SCHEMA_CHARS:
        raise RequestError(
            f"the JSON schema in `{param}` is {len(text)} characters long, more than the "
            f"{MAX_SCHEMA_CHARS} allowed",
            param=param,
        )
    try:
        grammar = json_schema_grammar(schema)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"`{param}` holds an invalid JSON schema: {exc}", param=param) from exc
    check_grammar(grammar, tokenizer, param)
    return grammar
