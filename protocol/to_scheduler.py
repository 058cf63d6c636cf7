"""Messages to the scheduler: requests from the frontend, results from workers, plans."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import CopyDirection, SamplingParams, TokenLogprobs


@dataclass
class SubmitRequest:
    """A validated, tokenized request from the frontend."""

    request_id: str  # unique id, chosen by the frontend
    prompt_ids: list[int]  # prompt token ids, 1 <= len <= max model length
    sampling: SamplingParams  # sampling parameters
    arrival_time: float  # wall clock (time.time()) when the frontend received it, seconds
    priority: int = 0  # request class: lower is served first (vLLM's and SGLang's sign)


@dataclass
class AbortRequest:
    """Stop a request: client gone, stop string matched, or server-side cancel."""

    request_id: str  # request to stop
    reason: str  # "abort" (client gone) or "stop" (stop string found by the frontend)


@dataclass
class SampledToken:
    """One token sampled for one job in one tick."""

    request_id: str  # job the token belongs to
    token_id: int  # sampled token id
    logprob: float  # log-probability of the token under the sampling distribution's logits
    top_ids: list[int] = field(default_factory=list)  # sampling.top_logprobs likeliest ids, best first
    top_logprobs: list[float] = field(default_factory=list)  # their log-probabilities
    prompt: TokenLogprobs | None = None  # prompt tokens 1.. (with sampling.prompt_logprobs, first token)


@dataclass
class StepResult:
    """What a worker that samples reports after executing a tick."""

    tick: int  # tick executed
    worker_rank: int  # global rank of the reporting worker
    tokens: list[SampledToken] = field(default_factory=list)  # one per job with sample=True
    compute_s: float = 0.0  # seconds the forward pass and sampling took on the worker
    swap_wait_s: float = 0.0  # seconds this tick waited for copies it depended on


@dataclass
class SwapDone:
    """A worker finished one KV copy started by a tick."""

    tick: int  # tick that started the copy
    worker_rank: int  # rank that finished it
    request_id: str  # job whose KV moved
    direction: CopyDirection  # OFFLOAD (device -> host) or UPLOAD (host -> device)
    seconds: float  # copy duration on the worker


@dataclass
class StepFailed:
    """A worker could not execute a tick; the jobs in it fail, the worker keeps going."""

    tick: int  # tick that failed
    worker_rank: int  # reporting rank
    request_ids: list[str]  # jobs of the tick
    message: str  # error text for the clients and the log


@dataclass
class SwapPlan:
    """The cache manager's proactive plan, published by the scheduler with the next tick."""

    based_on_tick: int  # snapshot tick the plan was made from
    offload: list[str] = field(default_factory=list)  # jobs whose KV should move to the host
    upload: list[str] = field(default_factory=list)  # jobs whose KV should come back to the device


__all__ = [
    "AbortRequest",
    "SampledToken",
    "SamplingParams",
    "StepFailed",
    "StepResult",
    "SubmitRequest",
    "SwapDone",
    "SwapPlan",
]
