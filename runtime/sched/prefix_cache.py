"""Automatic prefix caching: the scheduler's side of content-addressed KV blocks.

The device pool (runtime/kv/allocator.py) counts references and keeps cached free blocks
until memory is needed; this module decides what goes in and what comes out:

- Register: after a tick, each job's newly completed full blocks (prompt and output
  tokens alike, so a conversation's next turn finds the previous answer) get their chain
  hash (runtime/kv/prefix_hash.py). A block is registered only while every earlier block
  of the job is the registered one, so blocks that several jobs hold are always a leading
  run of each holder's table (what swap_book.py relies on to keep them on the device).
  A block computed twice at once (two jobs with the same prompt in one batch) stays
  private to the second job.
- Look up: a job with nothing computed is matched against the cache when the batch builder
  reaches it (`lookup`, the `prefix` callback of batching.pick_batch); at least the last
  token is always recomputed so that there are logits to sample from. The hit also goes
  to `job.cached_tokens`, so the policy prices the prefill still to do (`Job.prefill_left`).
  A job that asks for prompt log-probabilities is not matched (it registers its blocks).
- Attach: a job that starts with a hit takes its cached blocks (`share`) before any block
  is allocated for the tick, so an allocation cannot evict a block a job was promised.

Only the device pool caches. The host pool holds offloaded jobs' KV and nothing else:
cached free blocks are dropped on eviction, not moved to the host.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.kv.prefix_hash import extend_block_hashes
from fastserve.runtime.sched.batching import BatchPick
from fastserve.runtime.sched.job import Job


class PrefixCache:
    """Look-ups, attachments and registrations against one device pool."""

    def __init__(self, pool: KVBlockPool, block_size: int, enabled: bool = True) -> None:
        self.pool = pool
        self.block_size = block_size
        self.enabled = enabled
        self.queried_tokens = 0  # tokens of jobs started (or restarted), total
        self.hit_tokens = 0  # of which found in the cache, total
        self._hits: dict[str, list[int]] = {}  # this tick's look-ups: request id -> blocks

    @property
    def hit_rate(self) -> float:
        """Tokens found in the cache over tokens looked up, since the start."""
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0

    def matches(self, job: Job) -> bool:
        """Whether the job may start from cached KV: not when it asks for the prompt's own
        log-probabilities, which need logits at every prompt position."""
        return self.enabled and job.sampling.prompt_logprobs is None

    def peek(self, job: Job) -> int:
        """Tokens of the job the cache holds now (for the policy at arrival); takes nothing."""
        if not self.matches(job):
            return 0
        return len(self.pool.cached_prefix(self._hashes(job))) * self.block_size

    def lookup(self, job: Job) -> tuple[int, int]:
        """(cached tokens, how many of their blocks are cached free) for a job with nothing
        computed: what starting it now would skip and what taking the blocks costs."""
        if not self.matches(job):
            return 0, 0
        blocks = self.pool.cached_prefix(self._hashes(job))
        self._hits[job.request_id] = blocks
        job.cached_tokens = len(blocks) * self.block_size
        return job.cached_tokens, self.pool.share_cost(blocks)

    def attach(self, entries: Sequence[BatchPick]) -> None:
        """Hand each starting entry its cached blocks; call before allocating the tick's
        blocks, and once per pick_batch (the look-ups are only valid until then)."""
        for entry in entries:
            job = entry.job
            if job.num_computed or job.block_ids:
                continue  # not starting: already running, or its KV is on the device
            if self.enabled:
                self.queried_tokens += job.num_tokens
                self.hit_tokens += entry.cached_tokens
            if not entry.cached_tokens:
                continue
            blocks = self._hits[job.request_id][: entry.cached_tokens // self.block_size]
            self.pool.share(blocks)
            job.block_ids = list(blocks)
            job.num_computed = entry.cached_tokens
            job.num_registered = len(blocks)
        self._hits.clear()

    def register(self, job: Job) -> None:
        """Index the job's full blocks computed so far (after a tick that fed it)."""
        if not self.enabled:
            return
        full = min(job.num_computed // self.block_size, len(job.block_ids))
        if job.num_registered >= full:
            return
        if len(job.block_hashes) < full:
            extend_block_hashes(
                job.block_hashes, job.prompt_ids + job.output_ids, self.block_size, full
            )
        for i in range(job.num_registered, full):
            if not self.pool.register(job.block_ids[i], job.block_hashes[i]):
                return  # the chain is someone else's from here; retried after later ticks
            job.num_registered = i + 1

    def _hashes(self, job: Job) -> list[bytes]:
        """The hashes a look-up may match: every full block but the one with the last token."""
        limit = (job.num_tokens - 1) // self.block_size
        if len(job.block_hashes) < limit:
            extend_block_hashes(
                job.block_hashes, job.prompt_ids + job.output_ids, self.block_size, limit
            )
        return job.block_hashes[:limit]
