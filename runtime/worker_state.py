"""What a worker remembers of each job between ticks, and how a tick updates it.

Pure bookkeeping (no tensors): the scheduler sends each job's data once and only diffs
after; this table replays those diffs into the `BatchEntry`s the model runner executes.
`BatchEntry` lives here, torch-free, so the table (and its tests) need no model code.

With `feeds_samples` (async scheduling) the table appends each token the worker sampled to
its job itself, so a tick built before the previous one's result can feed it; the scheduler
then sends sampled tokens only to a job the workers had to forget (its KV was dropped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import SampledToken
from fastserve.protocol.to_worker import TickPlan


@dataclass
class WorkerJob:
    """A job as one worker knows it."""

    prompt_len: int  # prompt tokens
    token_ids: list[int]  # prompt plus every generated token the scheduler sent
    sampling: SamplingParams  # sampling parameters
    num_computed: int = 0  # tokens whose KV this worker's cache holds
    block_table: list[int] = field(default_factory=list)  # device block ids, in order


@dataclass
class BatchEntry:
    """One job's share of a batch: what the model runner computes for it this call."""

    request_id: str  # job
    token_ids: list[int]  # tokens to compute now: a prompt chunk, or the 1 last sampled token
    start_pos: int  # position of token_ids[0] (= tokens of this job already in its KV cache)
    block_table: list[int]  # device block ids covering at least start_pos + len(token_ids)
    sample: bool = True  # sample a next token after this chunk
    sampling: SamplingParams = field(default_factory=SamplingParams)
    num_generated: int = 0  # tokens this job has generated so far (min_tokens)


class WorkerJobTable:
    """Jobs known to one worker."""

    def __init__(self, feeds_samples: bool = False) -> None:
        self.feeds_samples = feeds_samples
        self.jobs: dict[str, WorkerJob] = {}
        # Jobs of a tick that failed here: the scheduler ends them, but a tick built ahead
        # may still schedule them; those entries are dropped until the release comes.
        self.failed: set[str] = set()

    def record(self, sampled: list[SampledToken]) -> None:
        """This worker's samples of the tick just run (with feeds_samples; else a no-op)."""
        if not self.feeds_samples:
            return
        for token in sampled:
            job = self.jobs.get(token.request_id)
            if job is not None:
                job.token_ids.append(token.token_id)

    def fail(self, plan: TickPlan) -> None:
        """The tick failed: forget its jobs, and drop them from later ticks."""
        for sched in plan.scheduled:
            self.jobs.pop(sched.request_id, None)
            self.failed.add(sched.request_id)

    def apply(self, plan: TickPlan) -> list[BatchEntry]:
        """Forget released jobs, learn new ones, and build this tick's entries."""
        for rid in plan.released:
            self.jobs.pop(rid, None)
            self.failed.discard(rid)
        for new in plan.new_jobs:
            # A prefix-cache hit: the first blocks sent with it already hold num_cached tokens.
            self.jobs[new.request_id] = WorkerJob(
                len(new.prompt_ids), list(new.prompt_ids), new.sampling, new.num_cached
            )
        for copy in plan.swap_in:
            # The upload's destination blocks replace the moved entries of the job's table
            # (shared entries before them stayed on the device).
            job = self.jobs[copy.request_id]
            job.block_table = job.block_table[: copy.keep_blocks] + list(copy.dst_block_ids)
        entries = []
        for sched in plan.scheduled:
            if sched.request_id in self.failed:
                continue
            job = self.jobs.get(sched.request_id)
            if job is None:
                raise KeyError(f"tick {plan.tick} schedules unknown job {sched.request_id}")
            job.token_ids.extend(sched.append_token_ids)
            job.block_table.extend(sched.new_block_ids)
            start = job.num_computed
            chunk = job.token_ids[start : start + sched.num_new_tokens]
            if len(chunk) != sched.num_new_tokens:
                raise ValueError(
                    f"job {sched.request_id}: asked for {sched.num_new_tokens} tokens at "
                    f"{start}, worker has {len(job.token_ids)}"
                )
            entries.append(
                BatchEntry(
                    sched.request_id,
                    chunk,
                    start,
                    list(job.block_table),
                    sched.sample,
                    job.sampling,
                    len(job.token_ids) - job.prompt_len,
                )
            )
            job.num_computed += len(chunk)
        return entries
