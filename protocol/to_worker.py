"""Messages the scheduler publishes to every worker (PUB/SUB, one per tick)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import BlockCopy, SamplingParams


@dataclass
class NewJob:
    """A job's full data, sent once, in the first tick that schedules it."""

    request_id: str  # unique id of the request
    prompt_ids: list[int]  # prompt token ids
    sampling: SamplingParams  # sampling parameters
    num_cached: int = 0  # leading tokens whose KV its first blocks already hold (prefix cache)


@dataclass
class ScheduledJob:
    """One job's share of a tick: the diff against what workers already know.

    (*) Without async scheduling every sampled token comes back to the workers this way;
    with it, workers append their own samples, and only a job they had to forget (its KV
    dropped, so sent again as a NewJob) gets its outputs here."""

    request_id: str  # job to run
    num_new_tokens: int  # tokens to compute, starting at the job's computed count (chunk or 1)
    append_token_ids: list[int] = field(default_factory=list)  # sampled ones workers lack (*)
    new_block_ids: list[int] = field(default_factory=list)  # device blocks appended to its table
    sample: bool = True  # sample a token after this chunk (False for a non-final prefill chunk)


@dataclass
class TickPlan:
    """One iteration: the batch, the KV moves to start, and the jobs to forget."""

    tick: int  # iteration number, increasing from 1
    new_jobs: list[NewJob] = field(default_factory=list)  # full data of jobs seen first now
    scheduled: list[ScheduledJob] = field(default_factory=list)  # the batch, in policy order
    swap_out: list[BlockCopy] = field(default_factory=list)  # device -> host copies to start
    swap_in: list[BlockCopy] = field(default_factory=list)  # host -> device copies to start
    released: list[str] = field(default_factory=list)  # finished or aborted jobs: drop state
