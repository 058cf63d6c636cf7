"""SwapBook: the scheduler's ledger of KV moves between the device and host pools.

The cache manager proposes moves; the book checks each against the current state (a job
may have finished or started running since), allocates the destination blocks, puts the
copy in the next tick, and completes it when every rank has acknowledged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fastserve.protocol.common import BlockCopy
from fastserve.protocol.to_frontend import RequestOutput
from fastserve.protocol.to_scheduler import SwapDone, SwapPlan
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.logging import get_logger
from fastserve.runtime.sched.job import Job, KVLocation

if TYPE_CHECKING:
    from fastserve.runtime.sched.scheduler_core import SchedulerCore


class SwapBook:
    """Pending and in-flight offloads/uploads of one scheduler."""

    def __init__(self, core: SchedulerCore, num_ackers: int) -> None:
        self.core = core
        self.num_ackers = num_ackers  # every worker acknowledges every copy
        self._want_out: list[str] = []
        self._want_in: list[str] = []
        self._moving: dict[str, tuple[str, list[int], list[int]]] = {}  # id -> (dir, src, dst)
        self._acks: dict[tuple[str, str], tuple[int, float]] = {}  # -> (ranks done, slowest s)
        self.num_offloads = 0
        self.num_uploads = 0
        self.num_recomputes = 0
        # (direction "out"/"in", blocks, slowest rank's seconds) of each completed copy:
        # the scheduler actor's metrics; the core itself keeps no histograms.
        self.on_done: Callable[[str, int, float], None] | None = None
        self._log = get_logger()

    def request(self, plan: SwapPlan) -> None:
        self._want_out = [r for r in plan.offload if r not in self._want_out] + self._want_out
        self._want_in = [r for r in plan.upload if r not in self._want_in] + self._want_in

    def has_pending(self) -> bool:
        return bool(self._want_out or self._want_in)

    def fill(self, plan: TickPlan, order: list[Job]) -> None:
        """Turn still-valid requested moves into this tick's copy commands."""
        jobs = self.core.jobs
        for rid in self._want_out:
            job = jobs.get(rid)
            if job and job.location is KVLocation.DEVICE and not job.in_flight and job.block_ids:
                self._offload(job, plan)
        for rid in self._want_in:
            job = jobs.get(rid)
            if job and job.location is KVLocation.HOST:
                self._upload(job, plan)
        self._want_out, self._want_in = [], []

    def unblock(self, plan: TickPlan, order: list[Job]) -> None:
        """Nothing could run and nothing is moving: make room now (the reactive fallback).

        Uploads the most urgent job waiting on the host if it fits; otherwise frees the
        device blocks of the least urgent resident job: offload if the host pool has room,
        else recompute it later (logged, never silent).
        """
        if not any(not j.in_flight for j in order) or self._moving:
            return
        for job in order:
            if job.location is KVLocation.HOST:
                if self.core.device.can_allocate(len(job.block_ids) + 1):
                    self._upload(job, plan)
                    return
                break
        victims = [j for j in reversed(order)
                   if j.location is KVLocation.DEVICE and not j.in_flight and j.block_ids]
        if len(victims) == 0 or (len(victims) == 1 and victims[0] is order[0]
                                 and not any(j.location is KVLocation.HOST for j in order)):
            return
        victim = victims[0]
        if self.core.host.can_allocate(len(victim.block_ids)):
            self._offload(victim, plan)
            return
        self.num_recomputes += 1
        self._log.warning("kv_recompute", request_id=victim.request_id,
                          blocks=len(victim.block_ids), reason="device and host pools full")
        self.core.device.free(victim.block_ids)
        victim.block_ids, victim.blocks_told = [], 0
        victim.location = KVLocation.NONE
        victim.num_computed = 0
        victim.unsent_token_ids = list(victim.output_ids)
        victim.workers_know = False
        plan.released.append(victim.request_id)

    def _offload(self, job: Job, plan: TickPlan) -> None:
        if not self.core.host.can_allocate(len(job.block_ids)):
            return
        dst = self.core.host.allocate(len(job.block_ids))
        plan.swap_out.append(BlockCopy(job.request_id, list(job.block_ids), dst))
        self._moving[job.request_id] = ("out", list(job.block_ids), dst)
        job.location = KVLocation.TO_HOST
        self._log.info("kv_offload_start", request_id=job.request_id, tick=plan.tick, blocks=len(dst))

    def _upload(self, job: Job, plan: TickPlan) -> None:
        if not self.core.device.can_allocate(len(job.block_ids)):
            return
        dst = self.core.device.allocate(len(job.block_ids))
        plan.swap_in.append(BlockCopy(job.request_id, list(job.block_ids), dst))
        self._moving[job.request_id] = ("in", list(job.block_ids), dst)
        job.location = KVLocation.TO_DEVICE
        self._log.info("kv_upload_start", request_id=job.request_id, tick=plan.tick, blocks=len(dst))

    def done(self, msg: SwapDone) -> list[RequestOutput]:
        key = (msg.request_id, msg.direction)
        acked, slowest = self._acks.get(key, (0, 0.0))
        acked, slowest = acked + 1, max(slowest, msg.seconds)
        self._acks[key] = (acked, slowest)
        if acked < self.num_ackers:
            return []
        del self._acks[key]
        direction, src, dst = self._moving.pop(msg.request_id)
        # The copy took as long as its slowest rank: the job could not run before that.
        self._log.info("kv_offload_done" if direction == "out" else "kv_upload_done",
                       request_id=msg.request_id, tick=msg.tick, blocks=len(dst),
                       seconds=round(slowest, 6))
        if self.on_done is not None:
            self.on_done(direction, len(dst), slowest)
        job = self.core.jobs[msg.request_id]
        job.num_swaps += 1
        if direction == "out":
            self.num_offloads += 1
            self.core.device.free(src)
            job.location = KVLocation.HOST
        else:
            self.num_uploads += 1
            self.core.host.free(src)
            job.location = KVLocation.DEVICE
            job.blocks_told = len(dst)  # the copy command told the workers the new table
        job.block_ids = dst
        if job.pending_finish is not None:
            return [self.core.finish(job, job.pending_finish)]
        return []
