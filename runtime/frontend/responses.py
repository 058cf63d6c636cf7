"""OpenAI response objects: whole responses, stream chunks, and their SSE framing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastserve.runtime.frontend.events import Delta, Finished, Usage
from fastserve.runtime.frontend.openai_schema import ParsedRequest

SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    return (
        b"data: "
        + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        + b"\n\n"
    )


class ResponseFormatter:
    """Builds the JSON objects of one request, in the completion or chat flavour."""

    def __init__(
        self,
        parsed: ParsedRequest,
        response_id: str,
        created: int,
        token_text: Callable[[int], str],
    ) -> None:
        self.parsed = parsed
        self.chat = parsed.kind == "chat"
        self.id = response_id
        self.created = created
        self._token_text = token_text
        self._text_offset = len(parsed.echo_text or "")  # completions logprobs.text_offset

    # -- whole (non-streaming) responses ------------------------------------------------

    def response(self, text: str, out: Delta, finish_reason: str, usage: Usage) -> dict[str, Any]:
        """`out` aggregates every token id and logprob of the request."""
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = (self.parsed.echo_text or "") + text
        choice["logprobs"] = self._logprobs(out)
        choice["finish_reason"] = finish_reason
        obj = "chat.completion" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [choice], "usage": usage.to_dict()}

    # -- streaming chunks ---------------------------------------------------------------

    def opening_chunks(self) -> list[dict[str, Any]]:
        """Sent before any token: the assistant role (chat) or the echoed prompt."""
        if self.chat:
            return [self._chunk({"role": "assistant", "content": ""}, None, None)]
        if self.parsed.echo_text:
            return [self._chunk(self.parsed.echo_text, None, None)]
        return []

    def delta_chunk(self, delta: Delta) -> dict[str, Any] | None:
        logprobs = self._logprobs(delta)
        if not delta.text and logprobs is None:
            return None  # nothing a client could show
        content: Any = {"content": delta.text} if self.chat else delta.text
        return self._chunk(content, logprobs, None)

    def closing_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        chunks = [self._chunk({} if self.chat else "", None, finished.finish_reason)]
        if self.parsed.include_usage:
            # OpenAI's shape: a last chunk with no choices, carrying the usage.
            obj = "chat.completion.chunk" if self.chat else "text_completion"
            chunks.append({**self._head(obj), "choices": [], "usage": finished.usage.to_dict()})
        return chunks

    # -- parts --------------------------------------------------------------------------

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.parsed.model}

    def _chunk(self, content: Any, logprobs: Any, finish_reason: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["delta"] = content
        else:
            choice["text"] = content
        choice["logprobs"] = logprobs
        choice["finish_reason"] = finish_reason
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        chunk = {**self._head(obj), "choices": [choice]}
        if self.parsed.include_usage:
            chunk["usage"] = None
        return chunk

    def _logprobs(self, out: Delta) -> dict[str, Any] | None:
        if self.parsed.logprobs is None or not out.logprobs:
            return None
        tokens = [self._token_text(t) for t in out.token_ids[: len(out.logprobs)]]
        values = out.logprobs[: len(tokens)]
        if self.chat:
            content = [
                {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                for t, lp in zip(tokens, values, strict=True)
            ]
            return {"content": content}
        offsets = []
        for t in tokens:
            offsets.append(self._text_offset)
            self._text_offset += len(t)
        top = (
            [{t: lp} for t, lp in zip(tokens, values, strict=True)]
            if self.parsed.logprobs
            else None
        )
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": top,
            "text_offset": offsets,
        }
