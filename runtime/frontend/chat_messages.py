"""Validation of chat `messages` into the plain {role, content} dicts templates expect."""

from __future__ import annotations

from typing import Any

from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.fields import json_type

# Keys passed through to the template besides role and content (templates may use them).
_PASSTHROUGH = ("name", "tool_call_id", "tool_calls")


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""  # assistant turns that only carried tool calls
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(
            f"`{where}.content` must be a string or an array of content parts, "
            f"got {json_type(content)}",
            param=f"{where}.content",
        )
    texts = []
    for j, part in enumerate(content):
        part_where = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise RequestError(
                f"`{part_where}` must be an object, got {json_type(part)}", param=part_where
            )
        kind = part.get("type")
        if kind != "text":
            raise RequestError(
                f"`{part_where}.type` is `{kind}`: only text content parts are supported",
                param=part_where,
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise RequestError(
                f"`{part_where}.text` must be a string, got {json_type(text)}", param=part_where
            )
        texts.append(text)
    # Text-only models' templates expect one string; parts are joined like vLLM does.
    return "\n".join(texts)


def normalize_messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        got = "an empty array" if isinstance(value, list) else json_type(value)
        raise RequestError(
            f"`messages` must be a non-empty array of message objects, got {got}",
            param="messages",
        )
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(
                f"`{where}` must be an object, got {json_type(message)}", param=where
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise RequestError(
                f"`{where}.role` must be a non-empty string, got {json_type(role)}",
                param=f"{where}.role",
            )
        clean = {"role": role, "content": _content_text(message.get("content"), where)}
        clean.update({k: message[k] for k in _PASSTHROUGH if message.get(k) is not None})
        _check_passthrough(clean, where)
        messages.append(clean)
    return messages


def _check_passthrough(message: dict[str, Any], where: str) -> None:
    """`name` and `tool_call_id` are strings; `tool_calls` an array of objects (their
    `function` is checked where the calls are rendered, see tool_request.py)."""
    for key in ("name", "tool_call_id"):
        if key in message and not isinstance(message[key], str):
            raise RequestError(
                f"`{where}.{key}` must be a string, got {json_type(message[key])}",
                param=f"{where}.{key}",
            )
    calls = message.get("tool_calls")
    if calls is None:
        return
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise RequestError(
            f"`{where}.tool_calls` must be an array of tool call objects, got {json_type(calls)}",
            param=f"{where}.tool_calls",
        )
