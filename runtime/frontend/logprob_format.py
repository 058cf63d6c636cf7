"""The `logprobs` objects of OpenAI responses, from token ids and log-probabilities.

Completions (legacy shape): parallel lists `tokens`, `token_logprobs`, `top_logprobs` (one
{text: logprob} map per token: the k alternatives, plus the sampled token as OpenAI adds it)
and `text_offset`; with echo the prompt's tokens come first, the first of them with null
values (nothing predicts it). Chat: `content`, one entry per token with its `top_logprobs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fastserve.protocol.common import TokenLogprobs

# JSON has no -Infinity: a masked alternative (a grammar left fewer than k tokens) is
# reported as OpenAI reports its impossible tokens.
MASKED_LOGPROB = -9999.0


def json_logprob(value: float) -> float | None:
    """NaN (not computed) -> null, -inf -> MASKED_LOGPROB."""
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else MASKED_LOGPROB


def chat_logprobs(
    token_text: Callable[[int], str],
    ids: list[int],
    logprobs: list[float],
    top_ids: list[list[int]],
    top_logprobs: list[list[float]],
) -> dict[str, Any]:
    def entry(token: int, lp: float) -> dict[str, Any]:
        text = token_text(token)
        return {"token": text, "logprob": json_logprob(lp), "bytes": list(text.encode())}

    content = []
    for i, (token, lp) in enumerate(zip(ids, logprobs, strict=False)):
        alts = zip(top_ids[i], top_logprobs[i], strict=True) if i < len(top_ids) else ()
        content.append({**entry(token, lp), "top_logprobs": [entry(t, v) for t, v in alts]})
    return {"content": content}


class CompletionLogprobs:
    """One completion choice's logprobs, built piece by piece (text offsets carry over)."""

    def __init__(self, token_text: Callable[[int], str], k: int, echo_chars: int) -> None:
        self._text = token_text
        self._k = k
        self._offset = echo_chars  # generated text starts after the echoed prompt

    def prompt(self, prompt_ids: list[int], lp: TokenLogprobs) -> dict[str, Any]:
        """The echoed prompt's part: offsets from 0; the first token has no values."""
        tokens = [self._text(t) for t in prompt_ids]
        n = len(tokens) - 1
        values: list[float | None] = [None] + [json_logprob(v) for v in lp.logprobs[:n]]
        values += [None] * (len(tokens) - len(values))
        top: list[dict[str, float | None] | None] = [None]
        for i in range(1, len(tokens)):
            have = i - 1 < len(lp.logprobs)
            alts = (lp.top_ids[i - 1], lp.top_logprobs[i - 1]) if have else ([], [])
            top.append(self._top(prompt_ids[i], values[i], *alts) if have else None)
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return self._object(tokens, values, top, offsets)

    def generated(
        self,
        ids: list[int],
        logprobs: list[float],
        top_ids: list[list[int]],
        top_logprobs: list[list[float]],
    ) -> dict[str, Any]:
        ids = ids[: len(logprobs)]
        tokens = [self._text(t) for t in ids]
        values = [json_logprob(v) for v in logprobs[: len(ids)]]
        top: list[dict[str, float | None] | None] = []
        for i, token in enumerate(ids):
            alts = (top_ids[i], top_logprobs[i]) if i < len(top_ids) else ([], [])
            top.append(self._top(token, values[i], *alts))
        offsets = []
        for t in tokens:
            offsets.append(self._offset)
            self._offset += len(t)
        return self._object(tokens, values, top, offsets)

    def _top(
        self, token: int, value: float | None, ids: list[int], values: list[float]
    ) -> dict[str, float | None]:
        out = {self._text(t): json_logprob(v) for t, v in zip(ids, values, strict=True)}
        out.setdefault(self._text(token), value)
        return out

    def _object(self, tokens: list[str], values: list[Any], top: list[Any], offsets: list[int]):
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": top if self._k else None,
            "text_offset": offsets,
        }


def join_completion_logprobs(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Concatenate the pieces of one choice (echoed prompt, then generated tokens)."""
    if not parts:
        return None
    out: dict[str, Any] = {key: [] for key in parts[0]}
    for part in parts:
        for key, value in part.items():
            if value is None:
                out[key] = None
            elif out[key] is not None:
                out[key] += value
    return out
