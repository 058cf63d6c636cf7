"""A job: the scheduler's view of one request, from arrival to its last token."""

from __future__ import annotations

from dataclasses import dataclass, field

# KVLocation lives with the messages (the cache manager's directory carries it on the wire).
from fastserve.protocol.common import KVLocation, SamplingParams

__all__ = ["Job", "KVLocation"]


@dataclass
class Job:
    """Mutable state of one request inside the scheduler."""

    request_id: str  # unique id
    prompt_ids: list[int]  # prompt token ids
    sampling: SamplingParams  # sampling parameters
    arrival: float  # seconds (scheduler clock) when it arrived
    priority: int = 0  # request class: lower runs first, above the policy's own levels
    eos_token_ids: tuple[int, ...] = ()  # model EOS ids, checked unless ignore_eos
    output_ids: list[int] = field(default_factory=list)  # generated token ids
    num_computed: int = 0  # tokens whose KV is cached (prompt and output)
    block_ids: list[int] = field(default_factory=list)  # block table in the pool of `location`
    # While offloaded, the leading entries shared with other jobs stay on the device (see
    # swap_book.py): block_ids[:num_kept_blocks] are device ids, the rest host ids.
    num_kept_blocks: int = 0
    # Prefix caching (runtime/sched/prefix_cache.py).
    block_hashes: list[bytes] = field(default_factory=list)  # content hashes of its full blocks
    num_registered: int = 0  # leading block_ids the device pool's cache index points to
    cached_tokens: int = 0  # its tokens the cache held at the latest look-up before it started
    location: KVLocation = KVLocation.NONE  # where the KV lives
    workers_know: bool = False  # NewJob already sent to the workers
    blocks_told: int = 0  # leading entries of block_ids the workers already have
    unsent_token_ids: list[int] = field(default_factory=list)  # sampled, not yet told to workers
    in_flight: bool = False  # part of a tick the workers are executing (one, or two ahead)
    # Looking ahead (async scheduling), the ticks in flight are counted in neither
    # num_computed nor output_ids until their results come back:
    ticks_in_flight: int = 0  # ticks in flight that hold it
    tokens_in_flight: int = 0  # tokens those ticks feed
    samples_in_flight: int = 0  # tokens those ticks sample
    ran_last_tick: bool = False  # was in the previous batch (to count preemptions)
    pending_finish: str | None = None  # finish reason to apply once its tick or swap completes
    # Policy bookkeeping (owned by the policy object; kept here so snapshots can show it).
    level: int = 0  # MLFQ queue index, 0 = highest priority
    level_service: float = 0.0  # seconds of own service attained in the current level
    total_service: float = 0.0  # seconds of own service attained in total
    last_served: float = 0.0  # when it last ran (scheduler clock); arrival before its first run
    true_output_len: int | None = None  # known only to the oracle baseline (benchmarks)
    # Accounting for metrics and logs.
    first_token_time: float | None = None  # when its first token was sampled
    num_preemptions: int = 0  # times it was runnable-in-progress and left out of a batch
    num_swaps: int = 0  # offloads plus uploads of its KV

    def stop_reason(self, token: int, max_model_len: int) -> str | None:
        """Why the job ends with `token` just sampled ("stop", "length"), None if it goes on."""
        params = self.sampling
        generated = len(self.output_ids)
        if generated >= params.min_tokens:
            if not params.ignore_eos and token in self.eos_token_ids:
                return "stop"
            if token in params.stop_token_ids:
                return "stop"
        if self.length_reached(max_model_len):
            return "length"
        return None

    def length_reached(self, max_model_len: int, pending: int = 0) -> bool:
        """Whether it has max_tokens outputs or fills the context, counting `pending`
        tokens sampled but not applied yet (its ticks in flight): then no step may follow."""
        generated = len(self.output_ids) + pending
        return generated >= self.sampling.max_tokens or self.num_tokens + pending >= max_model_len

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens."""
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_uncomputed(self) -> int:
        """Tokens the next step must feed: the rest of the prompt, or the last sampled token."""
        return self.num_tokens - self.num_computed

    @property
    def prefill_left(self) -> int:
        """Prompt tokens still to prefill: what the cache does not hold, before it starts."""
        return max(0, len(self.prompt_ids) - max(self.num_computed, self.cached_tokens))

    @property
    def in_prefill(self) -> bool:
        """True until the whole prompt has been computed."""
        return self.num_computed < len(self.prompt_ids)

    @property
    def started(self) -> bool:
        """True once any KV was computed."""
        return self.num_computed > 0
