"""Strict JSON decoding of request bodies and websocket messages: bad input is a 400.

Python's json module accepts things that would later crash or mislead the server:
NaN/Infinity (and 1e999, which parses to inf) slip through range checks; unpaired UTF-16
surrogates ("\\ud800") make the Rust tokenizer raise TypeError; very deep nesting raises
RecursionError. Every one of those becomes a RequestError here, naming what is wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastserve.runtime.frontend.errors import RequestError

# No OpenAI request body nests deeper than ~6 levels (messages -> content parts -> text);
# 64 leaves room for tool schemas while keeping every later walk of the body shallow.
MAX_JSON_DEPTH = 64


class _BadJson(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _BadJson(f"{name} is not valid JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadJson(f"the number {text[:40]} is out of range: numbers must be finite")
    return value


_BODY_PREFIX = "We could not parse the JSON body of your request"  # OpenAI's wording


def load_json(data: bytes | str, invalid: str = _BODY_PREFIX) -> Any:
    """Decode one JSON document; raise RequestError (400) for anything but clean JSON.

    `invalid` starts the message for text that is not JSON at all."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"the body is not valid UTF-8: {exc}") from exc
    else:
        text = data
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise RequestError(
            f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
        ) from exc
    except ValueError as exc:  # JSONDecodeError, _BadJson, int digit limits
        raise RequestError(f"{invalid}: {exc}") from exc
    check_json_value(value)
    return value


def check_json_value(value: Any) -> None:
    """Reject nesting deeper than MAX_JSON_DEPTH and strings that are not valid Unicode.

    Iterative, so that a deep document cannot exhaust the stack here either.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, list | dict):
            if depth > MAX_JSON_DEPTH:
                raise RequestError(
                    f"the JSON body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if text.isascii():
        return  # the common case, and ASCII cannot hold a surrogate
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            "a string in the body holds an unpaired UTF-16 surrogate "
            f"(position {exc.start}): it is not valid Unicode"
        ) from exc
