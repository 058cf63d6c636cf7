"""What a request's consumer (HTTP handler, websocket session) receives, in order.

Zero or more Delta events, then exactly one Finished or Failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class Finished:
    finish_reason: str  # "stop", "length" or "abort"
    usage: Usage


@dataclass
class Failed:
    message: str  # reported to the client as a server error
    usage: Usage


Event = Delta | Finished | Failed
