"""What a request's consumer (HTTP handler, websocket session) receives, in order.

Per choice (`index`; one unless the request asked for n > 1): zero or more Delta events,
then one Finished. A Failed ends the whole request, whatever its choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import TokenLogprobs


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class Delta:
    """New output: stable text (may be empty while a character or stop string is pending)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per token when asked
    top_ids: list[list[int]] = field(default_factory=list)  # per token: likeliest alternatives
    top_logprobs: list[list[float]] = field(default_factory=list)  # their log-probabilities
    prompt: TokenLogprobs | None = None  # prompt tokens 1.. (echo with logprobs), first Delta
    index: int = 0  # the choice it belongs to

    def extend(self, other: Delta) -> None:
        """Append another Delta of the same choice (whole responses aggregate them)."""
        self.text += other.text
        self.token_ids += other.token_ids
        self.logprobs += other.logprobs
        self.top_ids += other.top_ids
        self.top_logprobs += other.top_logprobs
        self.prompt = self.prompt or other.prompt


@dataclass
class Finished:
    finish_reason: str  # "stop", "length" or "abort"
    usage: Usage  # this choice's
    index: int = 0  # the choice that ended


@dataclass
class Failed:
    message: str  # reported to the client as a server error
    usage: Usage


Event = Delta | Finished | Failed
