"""Scheduler actor: runs SchedulerCore against the network, one tick per iteration."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastserve.protocol.common import CopyDirection
from fastserve.protocol.to_frontend import OutputBatch, RequestOutput, SchedulerStats
from fastserve.protocol.to_scheduler import (
    AbortRequest,
    StepFailed,
    StepResult,
    SubmitRequest,
    SwapDone,
    SwapPlan,
)
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.actor import Actor
from fastserve.runtime.sched.sched_metrics import SchedulerMetrics, job_states
from fastserve.runtime.sched.scheduler_core import SchedulerCore
from fastserve.runtime.transport import Inbox, Outbox


class SchedulerActor(Actor):
    """Owns the core; publishes ticks to workers, outputs to the frontend, KV changes to the
    cache manager. Up to `max_ticks_in_flight` ticks run at once (the pipeline depth)."""

    name = "scheduler"

    def __init__(
        self,
        inbox: Inbox,
        to_workers: Outbox,
        to_frontend: Outbox,
        to_cache_manager: Outbox | None,
        core: SchedulerCore,
        max_ticks_in_flight: int = 1,
        clock: Callable[[], float] = time.monotonic,
        kv_block_bytes: int = 0,
    ) -> None:
        super().__init__(inbox)
        self.core = core
        self.to_workers = to_workers
        self.to_frontend = to_frontend
        self.to_cache_manager = to_cache_manager
        self.max_ticks_in_flight = max_ticks_in_flight
        self.clock = clock
        self._may_progress = False  # a message arrived since the last empty plan
        self._outputs: list[RequestOutput] = []
        self._arrivals: dict[str, float] = {}  # request id -> arrival (scheduler clock)
        self._last_stats: SchedulerStats | None = None
        self._stats_sent_at = 0.0
        self.swap_wait_s = 0.0  # seconds ticks waited on copies, as reported by workers
        self.busy_s = 0.0  # seconds workers spent executing ticks
        self.metrics = SchedulerMetrics(kv_block_bytes)  # histograms for the frontend's /metrics
        core.swaps.on_done = self.metrics.observe_swap
        self._num_levels = 0  # levels seen so far: a level once exported stays (at 0)
        self.handlers = {
            SubmitRequest: self._on_submit,
            AbortRequest: self._on_abort,
            StepResult: self._on_result,
            StepFailed: self._on_failed,
            SwapDone: self._on_swap_done,
            SwapPlan: self._on_swap_plan,
        }

    async def dispatch(self, message: object) -> None:
        self._may_progress = True
        await super().dispatch(message)

    async def _on_submit(self, req: SubmitRequest) -> None:
        now = self.clock()
        arrival = now - max(0.0, time.time() - req.arrival_time)
        self._arrivals[req.request_id] = arrival
        self.log.info(
            "request_queued",  # "job_admitted" follows when it is first scheduled
            request_id=req.request_id,
            prompt_tokens=len(req.prompt_ids),
            max_tokens=req.sampling.max_tokens,
        )
        self._outputs += self.core.add(req, arrival)

    async def _on_abort(self, msg: AbortRequest) -> None:
        self.log.info("request_abort", request_id=msg.request_id, reason=msg.reason)
        self._outputs += self.core.abort(msg.request_id, msg.reason)

    async def _on_result(self, result: StepResult) -> None:
        self.swap_wait_s += result.swap_wait_s
        self.busy_s += result.compute_s
        self._outputs += self.core.update(result, self.clock())

    async def _on_failed(self, failed: StepFailed) -> None:
        self.log.error(
            "tick_failed",
            tick=failed.tick,
            worker=failed.worker_rank,
            error=failed.message,
            request_ids=failed.request_ids,
        )
        self._outputs += self.core.fail_tick(failed)

    async def _on_swap_done(self, msg: SwapDone) -> None:
        self.log.debug(
            "swap_done",
            request_id=msg.request_id,
            tick=msg.tick,
            direction=msg.direction,
            seconds=msg.seconds,
            worker=msg.worker_rank,
        )
        self._outputs += self.core.swap_done(msg)

    async def _on_swap_plan(self, plan: SwapPlan) -> None:
        self.core.request_swaps(plan)

    def has_work(self) -> bool:
        if self._outputs:
            return True
        return (
            self._may_progress
            and self.core.in_flight_ticks() < self.max_ticks_in_flight
            and self.core.has_work()
        )

    async def step(self) -> None:
        # Launch the next tick first so workers stay busy while clients get their tokens.
        if self.core.in_flight_ticks() < self.max_ticks_in_flight and self.core.has_work():
            await self._launch_tick()
        await self._flush_outputs()

    async def _launch_tick(self) -> None:
        plan = self.core.schedule(self.clock())
        for level, event, fields in self.core.events.drain():
            getattr(self.log, level)(event, **fields)
            self.metrics.on_event(event, fields)
        if not (plan.scheduled or plan.swap_in or plan.swap_out or plan.released):
            self._may_progress = False  # wait for a message before trying again
            return
        await self.to_workers.send(plan)
        self._log_tick(plan)
        if self.to_cache_manager is not None:
            await self.to_cache_manager.send(self.core.cache_update())

    def stats(self) -> SchedulerStats:
        core, swaps, m = self.core, self.core.swaps, self.metrics
        queued, running, swapped, levels = job_states(core.jobs.values())
        self._num_levels = max(self._num_levels, len(levels))
        levels += [0] * (self._num_levels - len(levels))
        return SchedulerStats(
            core.tick,
            len(core.jobs),
            core.device.num_free,
            core.device.num_blocks,
            core.host.num_free,
            core.host.num_blocks,
            sum(j.num_preemptions for j in core.jobs.values()) + core.finished_preemptions,
            swaps.num_offloads,
            swaps.num_uploads,
            swaps.num_recomputes,
            round(self.busy_s, 6),
            round(self.swap_wait_s, 6),
            queued=queued,
            running=running,
            swapped=swapped,
            level_depth=levels,
            demotions=m.demotions,
            promotions=m.promotions,
            # MLFQ's starvation promotions, Gittins' boosts; FCFS and the oracles have none.
            starvation_promotions=int(getattr(core.policy, "num_promotions", 0)),
            kv_block_bytes=m.kv_block_bytes,
            offload_seconds=m.swap_seconds[CopyDirection.OFFLOAD].snapshot(),
            upload_seconds=m.swap_seconds[CopyDirection.UPLOAD].snapshot(),
            offload_bytes=m.swap_bytes[CopyDirection.OFFLOAD].snapshot(),
            upload_bytes=m.swap_bytes[CopyDirection.UPLOAD].snapshot(),
            queue_seconds=m.queue_seconds.snapshot(),
            recent_preemptions=list(m.recent_preemptions),
            prefix_cache_queried_tokens=core.prefix.queried_tokens,
            prefix_cache_hit_tokens=core.prefix.hit_tokens,
            prefix_cache_evictions=core.device.num_evictions,
            cached_device_blocks=core.device.num_cached,
            cached_host_blocks=core.host.num_cached,
            steps_ahead=core.flight.steps_ahead,
            steps_wasted=core.flight.steps_wasted,
        )

    async def _send_stats(self) -> None:
        """Gauges for /metrics, at most every 0.2 s while busy and once on going idle."""
        stats = self.stats()
        now = self.clock()
        idle = not self.core.jobs
        if stats != self._last_stats and (idle or now - self._stats_sent_at >= 0.2):
            await self.to_frontend.send(stats)
            self._last_stats, self._stats_sent_at = stats, now

    async def _flush_outputs(self) -> None:
        await self._send_stats()
        if not self._outputs:
            return
        outputs, self._outputs = self._outputs, []
        now = self.clock()
        for out in outputs:
            if out.finish_reason is not None:
                arrival = self._arrivals.pop(out.request_id, now)
                self.log.info(
                    "request_finished",
                    request_id=out.request_id,
                    finish_reason=out.finish_reason,
                    jct_s=round(now - arrival, 4),
                    error=out.error,
                )
        await self.to_frontend.send(OutputBatch(self.core.tick, outputs))

    def _log_tick(self, plan: TickPlan) -> None:
        self.log.debug(
            "tick",
            tick=plan.tick,
            batch=[(s.request_id, s.num_new_tokens) for s in plan.scheduled],
            swap_out=[c.request_id for c in plan.swap_out],
            swap_in=[c.request_id for c in plan.swap_in],
            released=plan.released,
        )
