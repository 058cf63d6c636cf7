"""OpenAI response objects: whole responses, stream chunks, and their SSE framing.

One formatter per request; it keeps per-choice state (the opening chunk sent, completion
logprob offsets, the tool-call parser), so the chunks of n choices can interleave.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastserve.runtime.frontend.events import Delta, Finished, Usage
from fastserve.runtime.frontend.logprob_format import (
    CompletionLogprobs,
    chat_logprobs,
    join_completion_logprobs,
)
from fastserve.runtime.frontend.parsed_request import ParsedRequest
from fastserve.runtime.frontend.tool_parsers import ToolCall, ToolParser

SSE_DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event: `data: <json>` and a blank line."""
    return (
        b"data: "
        + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        + b"\n\n"
    )


@dataclass
class _Choice:
    index: int
    logprobs: CompletionLogprobs | None  # completions only
    tools: ToolParser | None  # chat with tools only
    opened: bool = False  # its opening chunk (role, or echoed prompt) was sent
    calls: list[ToolCall] = field(default_factory=list)


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
        self._choices: dict[int, _Choice] = {}

    # -- whole (non-streaming) responses ------------------------------------------------

    def response(self, outputs: list[tuple[Delta, str]], usage: Usage) -> dict[str, Any]:
        """One choice per (everything the choice generated, its finish reason), in order."""
        choices = []
        for index, (out, finish_reason) in enumerate(outputs):
            state = self._choice(index)
            choice: dict[str, Any] = {"index": index}
            if self.chat:
                content, calls = out.text, []
                if state.tools is not None:
                    content, calls = state.tools.feed(out.text)
                    rest, more = state.tools.flush()
                    content, calls = content + rest, calls + more
                    state.calls = calls
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if calls:
                    message["content"] = content or None
                    message["tool_calls"] = [c.to_dict() for c in calls]
                choice["message"] = message
                choice["logprobs"] = self._chat_logprobs(out)
            else:
                choice["text"] = (self.parsed.echo_text or "") + out.text
                parts = [p for p in (self._prompt_part(state, out), self._generated_part(state, out))
                         if p is not None]  # fmt: skip
                choice["logprobs"] = join_completion_logprobs(parts)
            choice["finish_reason"] = self._finish_reason(state, finish_reason)
            choices.append(choice)
        obj = "chat.completion" if self.chat else "text_completion"
        return {**self._head(obj), "choices": choices, "usage": usage.to_dict()}

    # -- streaming chunks ---------------------------------------------------------------

    def delta_chunks(self, delta: Delta) -> list[dict[str, Any]]:
        state = self._choice(delta.index)
        chunks = self._opening(state, delta)
        if self.chat:
            logprobs = self._chat_logprobs(delta)
            text, calls = delta.text, []
            if state.tools is not None:
                text, calls = state.tools.feed(delta.text)
            if text or logprobs is not None:
                chunks.append(self._chunk(state.index, {"content": text}, logprobs, None))
            if calls:
                chunks.append(self._chunk(state.index, self._calls_delta(state, calls), None, None))
            return chunks
        logprobs = self._generated_part(state, delta)
        if delta.text or logprobs is not None:
            chunks.append(self._chunk(state.index, delta.text, logprobs, None))
        return chunks

    def closing_chunks(self, finished: Finished) -> list[dict[str, Any]]:
        """The end of one choice: what its tool parser still held, and its finish reason."""
        state = self._choice(finished.index)
        chunks = self._opening(state, None)
        if state.tools is not None:
            text, calls = state.tools.flush()
            if text:
                chunks.append(self._chunk(state.index, {"content": text}, None, None))
            if calls:
                chunks.append(self._chunk(state.index, self._calls_delta(state, calls), None, None))
        reason = self._finish_reason(state, finished.finish_reason)
        chunks.append(self._chunk(state.index, {} if self.chat else "", None, reason))
        return chunks

    def usage_chunk(self, usage: Usage) -> dict[str, Any] | None:
        """OpenAI's last chunk with stream_options.include_usage: no choices, the usage."""
        if not self.parsed.include_usage:
            return None
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage.to_dict()}

    # -- parts --------------------------------------------------------------------------

    def _choice(self, index: int) -> _Choice:
        state = self._choices.get(index)
        if state is None:
            logprobs = None
            if not self.chat and self.parsed.logprobs is not None:
                echo_chars = len(self.parsed.echo_text or "")
                logprobs = CompletionLogprobs(self._token_text, self.parsed.logprobs, echo_chars)
            tools = self.parsed.tools.format.parser() if self.parsed.tools else None
            state = self._choices[index] = _Choice(index, logprobs, tools)
        return state

    def _opening(self, state: _Choice, first: Delta | None) -> list[dict[str, Any]]:
        """Sent before a choice's first token: the assistant role (chat) or the echoed
        prompt with its logprobs (completions)."""
        if state.opened:
            return []
        state.opened = True
        if self.chat:
            return [self._chunk(state.index, {"role": "assistant", "content": ""}, None, None)]
        if self.parsed.echo_text is None:
            return []
        prompt = self._prompt_part(state, first) if first is not None else None
        return [self._chunk(state.index, self.parsed.echo_text, prompt, None)]

    def _prompt_part(self, state: _Choice, out: Delta) -> dict[str, Any] | None:
        if state.logprobs is None or out.prompt is None or self.parsed.echo_text is None:
            return None
        return state.logprobs.prompt(self.parsed.prompt_ids, out.prompt)

    def _generated_part(self, state: _Choice, out: Delta) -> dict[str, Any] | None:
        if state.logprobs is None or not out.logprobs:
            return None
        return state.logprobs.generated(out.token_ids, out.logprobs, out.top_ids, out.top_logprobs)

    def _chat_logprobs(self, out: Delta) -> dict[str, Any] | None:
        if self.parsed.logprobs is None or not out.logprobs:
            return None
        return chat_logprobs(
            self._token_text, out.token_ids, out.logprobs, out.top_ids, out.top_logprobs
        )

    def _calls_delta(self, state: _Choice, calls: list[ToolCall]) -> dict[str, Any]:
        first = len(state.calls)
        state.calls += calls
        return {"tool_calls": [c.to_dict(first + i) for i, c in enumerate(calls)]}

    def _finish_reason(self, state: _Choice, reason: str) -> str:
        # OpenAI ends with "tool_calls" when the model chose to call, and with "stop" when
        # tool_choice named the function.
        tools = self.parsed.tools
        forced_name = tools is not None and tools.forced not in (None, "required")
        if state.calls and reason == "stop" and not forced_name:
            return "tool_calls"
        return reason

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.parsed.model}

    def _chunk(
        self, index: int, content: Any, logprobs: Any, finish_reason: str | None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index}
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
