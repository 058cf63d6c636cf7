"""Worker actor: executes ticks on its model shard and KV blocks; copies KV on the side."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from fastserve.protocol.common import BlockCopy, CopyDirection
from fastserve.protocol.to_scheduler import SampledToken, StepFailed, StepResult, SwapDone
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.actor import Actor
from fastserve.runtime.transport import Inbox, Outbox
from fastserve.runtime.worker_state import BatchEntry, WorkerJobTable


class CopyHandle(Protocol):
    """An asynchronous block copy."""

    def done(self) -> bool: ...


class Runner(Protocol):
    """What the worker needs of the model runner (`runtime.model.runner.ModelRunner`)."""

    def execute(self, entries: list[BatchEntry]) -> list[SampledToken]:
        """Run one batch; a token for each entry with sample=True, in entry order."""
        ...

    def release(self, request_id: str) -> None:
        """Forget per-request state (sampler RNG)."""
        ...

    def swap_out(self, copy: BlockCopy) -> CopyHandle:
        """Start copying a job's blocks device -> host."""
        ...

    def swap_in(self, copy: BlockCopy) -> CopyHandle:
        """Start copying a job's blocks host -> device."""
        ...

    @property
    def swap_wait_s(self) -> float:
        """Total seconds forwards have waited for uploads."""
        ...


@dataclass
class _Copy:
    tick: int
    request_id: str
    direction: CopyDirection
    started: float
    handle: CopyHandle


class WorkerActor(Actor):
    """One process per device. Only the sampling rank reports tokens; every rank acks its
    own copies (the scheduler waits for all of them).

    With fail_fast (a worker in a tp/pp group) a failed forward ends the process: its peers
    may be stuck in a collective with it or already broken, so the group cannot go on; the
    supervisor sees the exit and takes the server down, and peers fail their own waits."""

    name = "worker"

    def __init__(
        self,
        inbox: Inbox,
        to_scheduler: Outbox,
        runner: Runner,
        rank: int = 0,
        reports_tokens: bool = True,
        fail_fast: bool = False,
        feeds_samples: bool = False,
    ) -> None:
        super().__init__(inbox)
        self.to_scheduler = to_scheduler
        self.runner = runner
        self.rank = rank
        self.reports_tokens = reports_tokens
        self.fail_fast = fail_fast
        self.table = WorkerJobTable(feeds_samples)  # see worker_state.py
        self._swap_wait_seen = 0.0  # runner.swap_wait_s already reported
        self._ticks: deque[TickPlan] = deque()
        self._copies: list[_Copy] = []
        self.handlers = {TickPlan: self._on_tick}

    async def _on_tick(self, plan: TickPlan) -> None:
        self._ticks.append(plan)

    def has_work(self) -> bool:
        return bool(self._ticks) or bool(self._copies)

    async def step(self) -> None:
        await self._ack_copies()
        if self._ticks:
            await self._run_tick(self._ticks.popleft())
        elif self._copies:
            await asyncio.sleep(0.0005)  # copies in flight, nothing else to do: poll gently

    async def _run_tick(self, plan: TickPlan) -> None:
        for rid in plan.released:
            self.runner.release(rid)
        try:
            entries = self.table.apply(plan)
        except (KeyError, ValueError) as exc:
            await self._fail(plan, exc)
            return
        now = time.perf_counter()
        for copy in plan.swap_out:
            handle = self.runner.swap_out(copy)
            self._copies.append(_Copy(plan.tick, copy.request_id, CopyDirection.OFFLOAD, now, handle))
        for copy in plan.swap_in:
            handle = self.runner.swap_in(copy)
            self._copies.append(_Copy(plan.tick, copy.request_id, CopyDirection.UPLOAD, now, handle))
        if not entries:
            if plan.scheduled and self.reports_tokens:  # all dropped: jobs failed here before
                await self.to_scheduler.send(StepResult(plan.tick, self.rank, [], 0.0))
            return
        start = time.perf_counter()
        try:
            sampled = self.runner.execute(entries)
        except Exception as exc:  # a failed forward fails its jobs, not the worker
            self.log.exception("tick_failed", tick=plan.tick)
            await self._fail(plan, exc)
            if self.fail_fast:
                raise RuntimeError(f"worker {self.rank}: tick {plan.tick} failed: {exc}") from exc
            return
        elapsed = time.perf_counter() - start
        self.table.record(sampled)
        if self.reports_tokens:
            waited = self.runner.swap_wait_s - self._swap_wait_seen
            self._swap_wait_seen = self.runner.swap_wait_s
            await self.to_scheduler.send(
                StepResult(plan.tick, self.rank, sampled, elapsed, swap_wait_s=waited)
            )
        self.log.debug(
            "tick_done",
            tick=plan.tick,
            jobs=len(entries),
            tokens=sum(len(e.token_ids) for e in entries),
            seconds=round(elapsed, 5),
        )

    async def _fail(self, plan: TickPlan, exc: BaseException) -> None:
        self.table.fail(plan)
        ids = [s.request_id for s in plan.scheduled]
        await self.to_scheduler.send(
            StepFailed(plan.tick, self.rank, ids, f"{type(exc).__name__}: {exc}")
        )

    async def _ack_copies(self) -> None:
        still = []
        for copy in self._copies:
            if copy.handle.done():
                seconds = time.perf_counter() - copy.started
                await self.to_scheduler.send(
                    SwapDone(copy.tick, self.rank, copy.request_id, copy.direction, seconds)
                )
                # Per rank, to spot a slow one (the scheduler logs the move once all are done).
                self.log.debug("kv_copy_done", request_id=copy.request_id, tick=copy.tick,
                               direction=copy.direction, seconds=round(seconds, 6),
                               worker=self.rank)
            else:
                still.append(copy)
        self._copies = still
