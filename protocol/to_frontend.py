"""Messages from the scheduler to the frontend: tokens and ends of requests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestOutput:
    """New tokens of one request since its last output, and whether it ended."""

    request_id: str  # request the tokens belong to
    token_ids: list[int]  # newly generated token ids, in order
    logprobs: list[float] = field(default_factory=list)  # one per token when asked, else empty
    finish_reason: str | None = None  # None while running; "stop", "length" or "abort" at the end
    num_prompt_tokens: int = 0  # prompt length, for usage accounting
    error: str | None = None  # set when the request failed; finish_reason is then "error"


@dataclass
class OutputBatch:
    """All request outputs of one tick, sent as one message."""

    tick: int  # tick that produced them (0 for outputs not tied to a tick)
    outputs: list[RequestOutput]  # one entry per request with news


@dataclass
class SchedulerStats:
    """The scheduler's gauges and counters, for /metrics (sent when they change)."""

    tick: int  # last tick planned
    jobs: int  # unfinished jobs (running, preempted, waiting)
    free_device_blocks: int  # device KV blocks free
    total_device_blocks: int  # device KV pool size
    free_host_blocks: int  # host KV blocks free
    total_host_blocks: int  # host KV pool size
    preemptions: int  # jobs left out of a batch after running in the previous one, total
    offloads: int  # completed device -> host KV moves, total
    uploads: int  # completed host -> device KV moves, total
    recomputes: int  # jobs whose KV was dropped for lack of any room, total
    busy_seconds: float  # worker forward time summed over ticks, total
    swap_wait_seconds: float  # of which spent waiting for KV copies to finish, total
