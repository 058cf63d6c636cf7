"""Pick one iteration's batch from a policy's priority order. Pure: reads jobs, mutates nothing
(the `prefix` callback notes its look-up on the job, see prefix_cache.py).

The one batch builder: `SchedulerCore` (the server) and the simulator both call it, so a
simulated tick and a real tick pick the same jobs. Rules, in priority order:

- Only jobs whose KV is on the device (`KVLocation.DEVICE`) or not yet computed
  (`KVLocation.NONE`, a new job or one whose KV was dropped) can run; jobs on the host or
  with a copy in flight are skipped (the cache manager uploads them ahead of time), and so
  are jobs still `in_flight` in a tick the workers are executing (pipelining), unless
  `ahead(job)` says the job may take its next step before that tick's result (async
  scheduling): it is then seen as that tick will leave it, its fed tokens computed and its
  sampled token there (the workers feed it from their own sample).
- A job that still has uncomputed tokens beyond the last sampled one is *prefilling*: it
  feeds its remaining prompt (or, after its KV was dropped, prompt plus outputs so far).
  A decoding job feeds exactly one token.
- Token budget `max_tokens`: a prefill is taken whole if it fits the budget left. With
  `chunked_prefill` it is otherwise cut to the budget left (at least `min_chunk_tokens`);
  without it, a prompt longer than the whole budget is still cut, but only when it is the
  first token-consumer of the iteration (else it could never run).
- Blocks: a job needs blocks for num_computed + new tokens, minus the device blocks it
  holds; a job that does not fit the blocks left is skipped (a chunk is never shrunk to
  fit memory: half-prefilled jobs holding blocks would only make memory shorter). A job
  with nothing computed is admitted only if blocks for all its tokens plus one are left,
  so its later chunks and first decode can be allocated (only this chunk's blocks are
  counted as taken).
- Admission: with `max_started`, a job with nothing computed starts only while fewer than
  that many jobs hold KV half-done (started, unfinished, wherever their KV is). Under
  overload a preemptive policy would otherwise keep starting newcomers ahead of the jobs
  it already started, and memory, swaps and every job's finish time grow together.
- A lone job (the only one that could run) may take `solo_max_tokens` instead: with no one
  waiting behind it, smaller chunks only add iterations (and, from the second chunk on,
  attention over cached keys through a mask), so a lone 1k-token prompt is one chunk.
- Stop at `max_jobs` entries or when the token budget is spent. Jobs skipped for tokens or
  blocks do not stop the walk: a lower-priority job that fits still runs (work conserving).
- Prefix caching: with `prefix`, a job with nothing computed is looked up (prefix_cache.py)
  and starts past the cached tokens: only the rest is fed and allocated for; cached blocks
  nobody holds leave the free count when taken, so they count against the blocks left.
- `include_offloaded=True` treats host-resident jobs as runnable, needing all their blocks
  again (but those shared ones that stayed on the device): the batch the policy *wants*,
  which a cache manager uses to plan uploads/evictions.

`free_blocks` is what the caller lets this iteration allocate (free device blocks, minus any
reserve the caller keeps for uploads or a watermark).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastserve.runtime.kv.allocator import blocks_for_tokens
from fastserve.runtime.sched.job import Job, KVLocation


@dataclass
class BatchLimits:
    """Limits that apply to every tick."""

    max_batch_jobs: int  # most jobs per tick
    max_batch_tokens: int  # most tokens per tick (prefill chunks + decodes)
    block_size: int  # tokens per KV block
    max_model_len: int  # prompt + output may not exceed this
    max_started_jobs: int | None = None  # most jobs holding KV half-done (None: no bound)
    solo_batch_tokens: int | None = None  # token budget when one job alone can run (None: same)


# An in-flight job -> whether it may be scheduled again before its tick's result.
LookAhead = Callable[[Job], bool]


@dataclass(slots=True)
class BatchPick:
    """One job's part of an iteration, as the scheduler picks it (the workers get it as a
    `ScheduledJob` diff; the model runner as a `BatchEntry`)."""

    job: Job
    num_new_tokens: int  # tokens fed this iteration (prefill chunk, or 1 for a decode)
    is_prefill: bool  # feeds prompt tokens (service = prefill cost) rather than one decode
    new_blocks: int  # device blocks to allocate for it before the iteration runs
    cached_tokens: int = 0  # a starting job's tokens found in the prefix cache (not fed)

    @property
    def samples(self) -> bool:
        """True if this iteration ends with a new sampled token for the job (before or
        after the cached tokens were attached: num_computed is 0 or cached_tokens then)."""
        computed, total = progress(self.job)
        return max(computed, self.cached_tokens) + self.num_new_tokens >= total


def progress(job: Job) -> tuple[int, int]:
    """(tokens computed, tokens known) once its ticks in flight are done: the job as the
    next step it is scheduled for will find it."""
    return job.num_computed + job.tokens_in_flight, job.num_tokens + job.samples_in_flight


# A job with nothing computed -> (its tokens in the prefix cache, how many of their blocks
# are cached free: taking those lowers the free count).
PrefixLookup = Callable[[Job], tuple[int, int]]


def is_prefilling(job: Job) -> bool:
    """True while the job must feed more than its last sampled token (or has computed none),
    once its ticks in flight are done."""
    computed, total = progress(job)
    return computed == 0 or total - computed > 1


def device_blocks_held(job: Job) -> int:
    """Blocks the job holds in the device pool."""
    return len(job.block_ids) if job.location is KVLocation.DEVICE else 0


def _may_run(job: Job, include_offloaded: bool = False, ahead: LookAhead | None = None) -> bool:
    """Whether the walk below could take the job at all (memory and budgets aside)."""
    if job.in_flight:
        return ahead is not None and ahead(job)
    location = job.location
    return location in (KVLocation.DEVICE, KVLocation.NONE) or (
        include_offloaded and location is KVLocation.HOST
    )


def pick_batch(
    order: Iterable[Job],
    *,
    max_jobs: int,
    max_tokens: int,
    free_blocks: int,
    block_size: int,
    chunked_prefill: bool = True,
    min_chunk_tokens: int = 1,
    include_offloaded: bool = False,
    max_started: int | None = None,
    prefix: PrefixLookup | None = None,
    solo_max_tokens: int | None = None,
    ahead: LookAhead | None = None,
) -> list[BatchPick]:
    """The entries of the next iteration, in priority order (see the module doc)."""
    entries: list[BatchPick] = []
    jobs = list(order)
    lone = sum(1 for job in jobs if _may_run(job, include_offloaded, ahead)) == 1
    if lone and solo_max_tokens is not None and solo_max_tokens > max_tokens:
        max_tokens = solo_max_tokens
    tokens_left = max_tokens
    blocks_left = free_blocks
    # A job whose first chunk is in flight is started too (it holds KV half-done).
    started = sum(1 for job in jobs if job.started or job.in_flight)
    for job in jobs:
        if not _may_run(job, include_offloaded, ahead):
            continue
        location = job.location
        fresh = not job.started and not job.in_flight  # would start now
        # An offloaded job holds only its kept shared blocks: the rest must come back.
        held = job.num_kept_blocks if location is KVLocation.HOST else device_blocks_held(job)
        cached = cost = 0
        if prefix is not None and location is KVLocation.NONE and fresh:
            cached, cost = prefix(job)
            held = cached // block_size  # the cached blocks it will hold
        prefill = is_prefilling(job)
        computed, total = progress(job)
        computed += cached
        remaining = total - computed
        if not prefill:
            n = 1
        elif remaining <= tokens_left:
            n = remaining
        elif (chunked_prefill and tokens_left >= min_chunk_tokens) or tokens_left == max_tokens:
            n = tokens_left
        else:
            continue
        need = max(0, blocks_for_tokens(computed + n, block_size) - held)
        admit = blocks_for_tokens(job.num_tokens + 1, block_size) - held if fresh else 0
        if max(need, admit) + cost > blocks_left:
            continue
        if fresh:
            if max_started is not None and started >= max_started:
                continue
            started += 1
        entries.append(BatchPick(job, n, prefill, need, cached))
        tokens_left -= n
        blocks_left -= need + cost
        if len(entries) >= max_jobs or tokens_left <= 0:
            break
    return entries
