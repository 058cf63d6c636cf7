"""SchedulerCore: all job state and batch building, pure (no I/O, time passed in).

`schedule(now) -> TickPlan` picks the next batch in the policy's priority order;
`update(result, now)` applies the sampled tokens and returns the outputs for clients.
`cache_update()` says what changed in the KV since it was last called, for the cache
manager's directory; the moves it plans come back as commands that are checked and folded
into the next tick. The allocators of both pools live here so there is one source of truth.

With `async_scheduling` the workers append each token they sample to their own copy of the
job (nothing sampled is sent back to them), so the next tick can be built while the current
one runs: a job in one tick in flight may be scheduled again one step ahead, feeding the
token that tick samples. If that token ends the job (EOS, a stop token), the step ahead is
wasted and its result dropped; steps that would pass max_tokens or the context are never
scheduled ahead.
"""

from __future__ import annotations

from collections.abc import Callable

from fastserve.protocol.common import BlockCopy
from fastserve.protocol.to_cache_manager import CacheUpdate
from fastserve.protocol.to_frontend import RequestOutput
from fastserve.protocol.to_scheduler import (
    StepFailed,
    StepResult,
    SubmitRequest,
    SwapDone,
    SwapPlan,
)
from fastserve.protocol.to_worker import NewJob, ScheduledJob, TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool, blocks_for_tokens
from fastserve.runtime.sched.batching import BatchLimits, pick_batch
from fastserve.runtime.sched.cache_feed import CacheFeed
from fastserve.runtime.sched.in_flight import Step, TicksInFlight
from fastserve.runtime.sched.job import Job, KVLocation
from fastserve.runtime.sched.job_events import JobEvents
from fastserve.runtime.sched.policy import SchedulingPolicy, request_order
from fastserve.runtime.sched.prefix_cache import PrefixCache
from fastserve.runtime.sched.swap_book import SwapBook

# (num_new_tokens, is_prefill) per job of a batch -> relative cost of each job's share.
ServiceShares = Callable[[list[tuple[int, bool]]], list[float]]


def default_service_shares(batch: list[tuple[int, bool]]) -> list[float]:
    """Without a profile: a prefill token costs 1/20 of a job's share of a decode step."""
    return [n / 20.0 if prefill else 1.0 for n, prefill in batch]


class SchedulerCore:
    """Owns jobs, pools and the policy; turns them into ticks and results into outputs."""

    def __init__(
        self,
        policy: SchedulingPolicy,
        limits: BatchLimits,
        device_pool: KVBlockPool,
        host_pool: KVBlockPool,
        eos_token_ids: tuple[int, ...],
        num_swap_ackers: int = 1,
        service_shares: ServiceShares = default_service_shares,
        prefix_caching: bool = True,
        async_scheduling: bool = False,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.device = device_pool
        self.host = host_pool
        self.eos_token_ids = eos_token_ids
        self.service_shares = service_shares
        self.async_scheduling = async_scheduling
        self.jobs: dict[str, Job] = {}
        self.tick = 0
        self.swaps = SwapBook(self.jobs, device_pool, host_pool, num_swap_ackers)
        self.feed = CacheFeed(device_pool, host_pool, limits.block_size, limits.max_batch_jobs)
        self._order: list[Job] = []  # the last tick's priority order, for the cache manager
        self.prefix = PrefixCache(device_pool, limits.block_size, prefix_caching)
        self.flight = TicksInFlight(self.jobs)  # the ticks the workers are executing
        self._released: list[str] = []  # jobs the workers must forget, sent with the next tick
        self.finished_preemptions = 0  # preemptions of jobs that have since ended
        self.events = JobEvents()  # state changes the actor logs (the core does no I/O)

    # ---- arrivals and aborts -------------------------------------------------------------

    def add(self, req: SubmitRequest, now: float) -> list[RequestOutput]:
        """Admit a request; returns an error output if it can never fit the device pool."""
        need = blocks_for_tokens(
            len(req.prompt_ids) + req.sampling.max_tokens, self.limits.block_size
        )
        if req.request_id in self.jobs:
            return [_error(req.request_id, f"duplicate request id {req.request_id}")]
        if need > self.device.num_blocks:
            pool = self.device.num_blocks
            return [_error(req.request_id, f"request needs {need} KV blocks, the pool has {pool}")]
        job = Job(
            req.request_id,
            list(req.prompt_ids),
            req.sampling,
            now,
            eos_token_ids=self.eos_token_ids,
            priority=req.priority,
            last_served=now,
            # Only the oracle baseline reads this; benchmarks force lengths with ignore_eos,
            # so max_tokens is the true length there (and an upper bound elsewhere).
            true_output_len=req.sampling.max_tokens,
        )
        job.cached_tokens = self.prefix.peek(job)  # the policy prices the prefill left
        try:
            self.policy.add(job, now)
        except ValueError as exc:
            return [_error(req.request_id, f"scheduling policy refused the request: {exc}")]
        self.jobs[job.request_id] = job
        self.feed.touch(job)
        return []

    def abort(self, request_id: str, reason: str) -> list[RequestOutput]:
        """Stop a job now, or as soon as the tick or copy it is part of completes."""
        job = self.jobs.get(request_id)
        if job is None:
            return []
        if job.in_flight or job.location in (KVLocation.TO_HOST, KVLocation.TO_DEVICE):
            job.pending_finish = reason
            return []
        return [self.finish(job, reason)]

    # ---- building a tick -----------------------------------------------------------------

    def request_swaps(self, plan: SwapPlan) -> None:
        """Queue the cache manager's offloads and uploads for the next tick."""
        self.swaps.request(plan)

    def swap_done(self, msg: SwapDone) -> list[RequestOutput]:
        """A worker finished a copy; once every rank has, the job's KV has moved."""
        job = self.swaps.done(msg)
        if job is None:
            return []
        if job.pending_finish is not None:
            return [self.finish(job, job.pending_finish)]
        self.feed.touch(job)
        return []

    def has_work(self) -> bool:
        """True when some job could run or move now (not all waiting on the workers)."""
        return (
            self.swaps.has_pending()
            or any(
                not j.in_flight and j.location not in (KVLocation.TO_HOST, KVLocation.TO_DEVICE)
                for j in self.jobs.values()
            )
            or bool(self._released)
            or (self.async_scheduling and any(self._ahead(j) for j in self.jobs.values()))
        )

    def _ahead(self, job: Job) -> bool:
        """Whether an in-flight job may be scheduled one step ahead of its tick's result."""
        return (
            job.in_flight
            and job.ticks_in_flight == 1
            and job.pending_finish is None
            and job.location is KVLocation.DEVICE
            and not job.length_reached(self.limits.max_model_len, job.samples_in_flight)
        )

    def schedule(self, now: float) -> TickPlan:
        """The next tick: a batch in priority order, plus KV moves and releases."""
        plan = TickPlan(tick=self.tick + 1, released=self._released)
        self._released = []
        order = self.priority_order(now)
        self._order = order
        self.swaps.fill(plan)
        batch = self._pick_batch(order)
        if not batch and not plan.swap_out and not plan.swap_in and not self.flight:
            self.swaps.unblock(plan, order)  # nothing can run: make room reactively
        self.feed.touch_moved(plan, self.jobs)
        ran = {id(step.job) for step in batch}  # a set: the order holds every live job
        for job in order:
            runs = id(job) in ran
            if job.ran_last_tick and job.started and not runs and not job.in_flight:
                job.num_preemptions += 1
            # A job still in flight but not in this tick has not been preempted (yet).
            job.ran_last_tick = runs or (job.ran_last_tick and job.in_flight)
        self.events.on_schedule(plan.tick, order, [(s.job, s.num_tokens) for s in batch], now)
        for step in batch:
            plan.scheduled.append(self._to_scheduled(step, plan))
        if batch or plan.swap_out or plan.swap_in or plan.released:
            self.tick = plan.tick
        if batch:
            self.flight.launch(plan.tick, batch)
        return plan

    def priority_order(self, now: float) -> list[Job]:
        """The order batches are built from (policy.request_order)."""
        return request_order(self.policy, now)

    def _pick_batch(self, order: list[Job]) -> list[Step]:
        """The batch builder's entries (batching.pick_batch), with their blocks allocated."""
        lim = self.limits
        entries = pick_batch(
            order,
            max_jobs=lim.max_batch_jobs,
            max_tokens=lim.max_batch_tokens,
            free_blocks=self.device.num_free,
            block_size=lim.block_size,
            max_started=lim.max_started_jobs,
            prefix=self.prefix.lookup if self.prefix.enabled else None,
            solo_max_tokens=lim.solo_batch_tokens,
            ahead=self._ahead if self.async_scheduling else None,
        )
        self.prefix.attach(entries)  # before allocating: no eviction of a promised block
        batch: list[Step] = []
        for entry in entries:
            job = entry.job
            samples = entry.samples  # before start() moves the job's progress
            job.block_ids.extend(self.device.allocate(entry.new_blocks))
            job.location = KVLocation.DEVICE
            batch.append(self.flight.start(job, entry.num_new_tokens, samples))
            self.feed.touch(job)
        return batch

    def _to_scheduled(self, step: Step, plan: TickPlan) -> ScheduledJob:
        job = step.job
        if not job.workers_know:
            plan.new_jobs.append(
                NewJob(job.request_id, job.prompt_ids, job.sampling, job.num_computed)
            )
            job.workers_know = True
        # Workers hold the prompt plus every token we told them; send the new ones.
        sched = ScheduledJob(
            request_id=job.request_id,
            num_new_tokens=step.num_tokens,
            append_token_ids=job.unsent_token_ids,
            new_block_ids=job.block_ids[job.blocks_told :],
            sample=step.samples,
        )
        job.unsent_token_ids = []
        job.blocks_told = len(job.block_ids)
        return sched

    # ---- results -------------------------------------------------------------------------

    def update(self, result: StepResult, now: float) -> list[RequestOutput]:
        """Apply a tick's sampled tokens; returns outputs (new tokens, finishes)."""
        batch = self.flight.land(result.tick)
        sampled = {t.request_id: t for t in result.tokens}
        shares = self.service_shares([(s.num_tokens, s.job.in_prefill) for s in batch])
        scale = result.compute_s / sum(shares) if sum(shares) > 0 else 0.0
        self.policy.on_served(
            [(step.job, s * scale) for step, s in zip(batch, shares, strict=True)], now
        )
        outputs: list[RequestOutput] = []
        for step in batch:
            job = step.job
            job.num_computed += step.num_tokens
            self.feed.touch(job)  # a finish below forgets it again
            self.prefix.register(job)
            token = sampled.get(job.request_id)
            if job.pending_finish is not None:
                outputs.append(self.finish(job, job.pending_finish))
                continue
            if token is None:
                continue  # a non-final prefill chunk
            if job.first_token_time is None:
                job.first_token_time = now
            job.output_ids.append(token.token_id)
            if not self.async_scheduling:  # else the workers fed it themselves
                job.unsent_token_ids.append(token.token_id)
            reason = job.stop_reason(token.token_id, self.limits.max_model_len)
            out = RequestOutput(
                job.request_id,
                [token.token_id],
                [token.logprob] if job.sampling.logprobs else [],
                num_prompt_tokens=len(job.prompt_ids),
                top_ids=[token.top_ids] if job.sampling.top_logprobs else [],
                top_logprobs=[token.top_logprobs] if job.sampling.top_logprobs else [],
                prompt_logprobs=token.prompt,
            )
            if reason is not None:
                self.finish(job, reason)
                out.finish_reason = reason
            outputs.append(out)
        return outputs

    def fail_tick(self, failed: StepFailed) -> list[RequestOutput]:
        """A worker could not run a tick: its jobs end with the error."""
        steps = self.flight.land(failed.tick)
        return [self.finish(step.job, "error", failed.message) for step in steps]

    def in_flight_ticks(self) -> int:
        return len(self.flight)

    def finish(self, job: Job, reason: str, error: str | None = None) -> RequestOutput:
        """Free everything the job holds; tell the workers with the next tick."""
        self.swaps.release(job)
        self.jobs.pop(job.request_id, None)
        self.finished_preemptions += job.num_preemptions
        self.policy.on_finished(job, reason)  # learning policies tell finished from cut off
        self.policy.remove(job)
        self.events.forget(job.request_id)
        self.feed.forget(job.request_id)
        if job.workers_know:
            self._released.append(job.request_id)
        if reason == "error":
            return _error(job.request_id, error or "request failed")
        return RequestOutput(
            job.request_id, [], finish_reason=reason, num_prompt_tokens=len(job.prompt_ids)
        )

    # ---- cache manager feed --------------------------------------------------------------

    def cache_update(self) -> CacheUpdate:
        """What changed in the KV since the last call, with the last tick's priority order
        (the one it was built from, so the cache manager plans on what the batch saw)."""
        return self.feed.update(self.tick, self._order, self.jobs)


def _error(request_id: str, message: str) -> RequestOutput:
    return RequestOutput(request_id, [], finish_reason="error", error=message)


__all__ = ["BlockCopy", "SchedulerCore", "ServiceShares"]
