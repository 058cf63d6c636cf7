"""Messages from the scheduler to the frontend: tokens and ends of requests."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import TokenLogprobs


@dataclass
class RequestOutput:
    """New tokens of one request since its last output, and whether it ended."""

    request_id: str  # request the tokens belong to
    token_ids: list[int]  # newly generated token ids, in order
    logprobs: list[float] = field(default_factory=list)  # one per token when asked, else empty
    finish_reason: str | None = None  # None while running; "stop", "length" or "abort" at the end
    num_prompt_tokens: int = 0  # prompt length, for usage accounting
    error: str | None = None  # set when the request failed; finish_reason is then "error"
    top_ids: list[list[int]] = field(default_factory=list)  # per token: likeliest alternatives
    top_logprobs: list[list[float]] = field(default_factory=list)  # their log-probabilities
    prompt_logprobs: TokenLogprobs | None = None  # prompt tokens 1.., once, with the first token


@dataclass
class OutputBatch:
    """All request outputs of one tick, sent as one message."""

    tick: int  # tick that produced them (0 for outputs not tied to a tick)
    outputs: list[RequestOutput]  # one entry per request with news


@dataclass
class HistogramCounts:
    """A histogram the scheduler accumulates; the bucket bounds are constants both sides
    share (runtime/sched/sched_metrics.py), so only the counts travel."""

    # Observations per bucket (not cumulative); the last one counts those above every bound.
    counts: list[int] = field(default_factory=list)
    total: float = 0.0  # sum of the observed values


@dataclass
class PreemptionRecord:
    """One job left out of a batch while it was running (for the dashboard)."""

    request_id: str  # the preempted request
    tick: int  # tick whose batch left it out
    location: str  # where its KV was then (KVLocation value: "device", "host", ...)


@dataclass
class SchedulerStats:
    """The scheduler's gauges and counters, for /metrics and /dashboard (sent when they
    change). Counters and histograms are cumulative since the scheduler started, so a
    coalesced or lost message loses nothing: the frontend exports the latest one as is."""

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
    queued: int = 0  # jobs waiting: not started yet, or preempted with their KV on the device
    running: int = 0  # jobs in the last tick's batch or still executing
    swapped: int = 0  # jobs whose KV is on the host or moving between device and host
    level_depth: list[int] = field(default_factory=list)  # unfinished jobs by job.level (index)
    demotions: int = 0  # job level changes towards less urgent levels, total
    promotions: int = 0  # job level changes towards more urgent levels, total
    starvation_promotions: int = 0  # the policy's own starvation promotions (boosts), total
    kv_block_bytes: int = 0  # bytes of one KV block summed over every rank; 0 when unknown
    offload_seconds: HistogramCounts = field(default_factory=HistogramCounts)  # per offload, slowest rank
    upload_seconds: HistogramCounts = field(default_factory=HistogramCounts)  # per upload, slowest rank
    offload_bytes: HistogramCounts = field(default_factory=HistogramCounts)  # KV bytes per offload
    upload_bytes: HistogramCounts = field(default_factory=HistogramCounts)  # KV bytes per upload
    queue_seconds: HistogramCounts = field(default_factory=HistogramCounts)  # arrival to first run
    recent_preemptions: list[PreemptionRecord] = field(default_factory=list)  # latest, oldest first
    prefix_cache_queried_tokens: int = 0  # tokens of jobs started or restarted with caching on, total
    prefix_cache_hit_tokens: int = 0  # of which the prefix cache held (not prefilled), total
    prefix_cache_evictions: int = 0  # cached free device blocks reclaimed for new KV, total
    cached_device_blocks: int = 0  # device blocks holding content-addressed KV, held or free
    cached_host_blocks: int = 0  # the same in the host pool (0: the host pool does not cache)
    steps_ahead: int = 0  # job steps scheduled before the job's previous result (async), total
    steps_wasted: int = 0  # of which the job had ended meanwhile (result dropped), total
