"""Typed reads of JSON request fields that name the field and the expected type on error.

JSON null is treated as absent: many OpenAI-compatible clients send explicit nulls for
fields they do not set.
"""

from __future__ import annotations

import math
from typing import Any

from fastserve.runtime.frontend.errors import RequestError


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _wrong(name: str, expected: str, value: Any) -> RequestError:
    return RequestError(f"`{name}` must be {expected}, got {json_type(value)}", param=name)


def _is_int(value: Any) -> bool:
    # bool is a subclass of int in Python but not an integer in JSON.
    return isinstance(value, int) and not isinstance(value, bool)


def get_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # Accept 3.0 (some clients serialize every number as a float) but not 3.5.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not _is_int(value):
        raise _wrong(name, "an integer", value)
    return value


def get_float(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(name, "a number", value)
    # NaN passes every range check (all comparisons are false): refuse it here too, not
    # only in the JSON decoder, since bodies also arrive already decoded (tests, websocket).
    if not math.isfinite(value):
        raise RequestError(f"`{name}` must be a finite number, got {value}", param=name)
    return float(value)


def get_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _wrong(name, "a boolean", value)
    return value


def get_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _wrong(name, "a string", value)
    return value


def get_dict(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _wrong(name, "an object", value)
    return value


def get_str_or_str_list(body: dict[str, Any], name: str) -> list[str]:
    """A field that may be one string or a list of strings (like `stop`)."""
    value = body.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _wrong(name, "a string or an array of strings", value)


def get_int_list(body: dict[str, Any], name: str) -> list[int]:
    value = body.get(name)
    if value is None:
        return []
    if isinstance(value, list) and all(_is_int(v) for v in value):
        return list(value)
    raise _wrong(name, "an array of integers", value)


def is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise unless low <= value <= high (low < value when low_open)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        lo = "" if low is None else (f"greater than {low}" if low_open else f"at least {low}")
        hi = "" if high is None else f"at most {high}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        raise RequestError(f"`{name}` must be {bounds}, got {value}", param=name)
