"""The values FastServeClient hands back: errors, usage, whole results."""

from __future__ import annotations

from dataclasses import dataclass, field


class FastServeError(Exception):
    """The server rejected (status 4xx) or failed (status 5xx) a request.

    Status 0 means the client itself could not go on (it was closed, or its connection
    machinery failed).
    """

    def __init__(self, status: int, message: str, type: str = "") -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status  # HTTP-style status code
        self.message = message  # the server's explanation
        self.type = type  # OpenAI error type, e.g. "invalid_request_error"


@dataclass(frozen=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int  # prompt length
    completion_tokens: int  # tokens generated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class CompletionResult:
    """A whole response, as returned by `FastServeClient.complete`."""

    text: str  # the generated text (with the prompt first when the body asked for echo)
    token_ids: list[int]  # the generated token ids
    finish_reason: str  # "stop", "length" or "abort"
    usage: Usage  # token counts
    logprobs: list[float] = field(default_factory=list)  # per token, when the body asked
