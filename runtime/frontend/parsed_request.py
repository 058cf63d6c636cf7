"""What request parsing produces (ParsedRequest) and the server facts it checks against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastserve.protocol.common import SamplingParams

if TYPE_CHECKING:
    from fastserve.runtime.frontend.tool_request import ToolSetup


@dataclass(frozen=True)
class ServerLimits:
    """What the server accepts: the model it serves and its context."""

    model_name: str  # the only accepted `model`
    max_model_len: int  # prompt + completion tokens must fit
    default_max_tokens: int  # used (capped by the room left) when the client gives none


@dataclass
class ParsedRequest:
    kind: str  # "completion" or "chat"
    model: str
    prompt_ids: list[int]
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with usage
    echo_text: str | None = None  # completions echo=True: the prompt text to prepend
    logprobs: int | None = None  # None: not asked; else the alternatives asked per token
    priority: int = 0  # request class for the scheduler: lower is served first
    n: int = 1  # choices returned: sibling jobs with the same prompt
    best_of: int = 1  # jobs generated; the n of highest cumulative logprob are returned
    echo_only: bool = False  # completions echo with max_tokens 0: the prompt, nothing generated
    tools: ToolSetup | None = None  # chat tools in play (None: none, or tool_choice "none")
