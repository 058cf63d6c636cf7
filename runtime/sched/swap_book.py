"""SwapBook: the scheduler's ledger of KV moves between the device and host pools.

The cache manager sends its plan as commands (offload these jobs, upload those). It
planned from the directory the scheduler fed it (cache_feed.py), a tick or more ago, so
the book applies each command only if it still holds: the job is still there, still where
the plan saw it and not running now, and the destination pool has the room. It does not
plan again; it allocates the destination blocks, puts the copy in the next tick, and
completes it when every rank has acknowledged.

Shared blocks (prefix caching: other jobs hold them too) never move. Another job may be
reading them on the device in this very tick, and a host copy would leave two owners
with two tables to keep apart. An offload moves only the job's own blocks, those after
its last shared one (shared blocks are a leading run, see prefix_cache.py); the shared
ones stay on the device, still held by the offloaded job, so they cannot be evicted
under it, and an upload brings back only what moved. A job whose blocks are all shared
is never offloaded: that would free nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from fastserve.protocol.common import BlockCopy, CopyDirection
from fastserve.protocol.to_scheduler import SwapDone, SwapPlan
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.logging import get_logger
from fastserve.runtime.sched.job import Job, KVLocation


class SwapBook:
    """Pending and in-flight offloads/uploads of one scheduler's jobs between its pools."""

    def __init__(
        self, jobs: dict[str, Job], device: KVBlockPool, host: KVBlockPool, num_ackers: int
    ) -> None:
        self.jobs = jobs  # the scheduler's live jobs (the same dict, not a copy)
        self.device = device
        self.host = host
        self.num_ackers = num_ackers  # every worker acknowledges every copy
        self._want_out: list[str] = []
        self._want_in: list[str] = []
        # request id -> (direction, source blocks, destination blocks) of its copy in flight
        self._moving: dict[str, tuple[CopyDirection, list[int], list[int]]] = {}
        # (request id, direction) -> (ranks done, slowest rank's seconds so far)
        self._acks: dict[tuple[str, CopyDirection], tuple[int, float]] = {}
        self.num_offloads = 0
        self.num_uploads = 0
        self.num_recomputes = 0
        # (direction, blocks, slowest rank's seconds) of each completed copy:
        # the scheduler actor's metrics; the core itself keeps no histograms.
        self.on_done: Callable[[CopyDirection, int, float], None] | None = None
        self._log = get_logger()

    def request(self, plan: SwapPlan) -> None:
        self._want_out = [r for r in plan.offload if r not in self._want_out] + self._want_out
        self._want_in = [r for r in plan.upload if r not in self._want_in] + self._want_in

    def has_pending(self) -> bool:
        return bool(self._want_out or self._want_in)

    def fill(self, plan: TickPlan) -> None:
        """Put the commands that still hold into this tick as copies."""
        jobs = self.jobs
        for rid in self._want_out:
            job = jobs.get(rid)
            if job and job.location is KVLocation.DEVICE and not job.in_flight and job.block_ids:
                self._offload(job, plan)  # skipped when nothing of it could move
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
        device = self.device
        for job in order:
            if job.location is KVLocation.HOST:
                if device.can_allocate(len(job.block_ids) - job.num_kept_blocks + 1):
                    self._upload(job, plan)
                    return
                break
        # Only a job with blocks of its own frees anything (shared ones stay held by others).
        victims = [j for j in reversed(order) if j.location is KVLocation.DEVICE
                   and not j.in_flight and shared_prefix(j, device) < len(j.block_ids)]
        if len(victims) == 0 or (len(victims) == 1 and victims[0] is order[0]
                                 and not any(j.location is KVLocation.HOST for j in order)):
            return
        victim = victims[0]
        if self.host.can_allocate(len(victim.block_ids) - shared_prefix(victim, device)):
            self._offload(victim, plan)
            return
        self.num_recomputes += 1
        self._log.warning("kv_recompute", request_id=victim.request_id,
                          blocks=len(victim.block_ids), reason="device and host pools full")
        device.free(victim.block_ids)  # its registered blocks stay cached: it may find them
        victim.block_ids, victim.blocks_told = [], 0
        victim.location = KVLocation.NONE
        victim.num_computed = victim.num_registered = victim.cached_tokens = 0
        victim.unsent_token_ids = list(victim.output_ids)
        victim.workers_know = False
        plan.released.append(victim.request_id)

    def release(self, job: Job) -> None:
        """Free whatever the job holds in either pool (it has finished)."""
        if job.location in (KVLocation.DEVICE, KVLocation.NONE):
            self.device.free(job.block_ids)
        elif job.location is KVLocation.HOST:  # shared leading blocks stayed on the device
            self.device.free(job.block_ids[: job.num_kept_blocks])
            self.host.free(job.block_ids[job.num_kept_blocks :])
        job.block_ids = []
        job.location = KVLocation.NONE

    def _offload(self, job: Job, plan: TickPlan) -> None:
        keep = shared_prefix(job, self.device)  # sharing may have changed since the plan
        src = job.block_ids[keep:]
        if not src or not self.host.can_allocate(len(src)):
            return
        dst = self.host.allocate(len(src))
        plan.swap_out.append(BlockCopy(job.request_id, src, dst, keep))
        self._moving[job.request_id] = (CopyDirection.OFFLOAD, src, dst)
        job.num_kept_blocks = keep
        job.location = KVLocation.TO_HOST
        self._log.info("kv_offload_start", request_id=job.request_id, tick=plan.tick,
                       blocks=len(dst), kept=keep)

    def _upload(self, job: Job, plan: TickPlan) -> None:
        keep = job.num_kept_blocks
        src = job.block_ids[keep:]
        if not self.device.can_allocate(len(src)):
            return
        dst = self.device.allocate(len(src))
        plan.swap_in.append(BlockCopy(job.request_id, src, dst, keep))
        self._moving[job.request_id] = (CopyDirection.UPLOAD, src, dst)
        job.location = KVLocation.TO_DEVICE
        self._log.info("kv_upload_start", request_id=job.request_id, tick=plan.tick,
                       blocks=len(dst), kept=keep)

    def done(self, msg: SwapDone) -> Job | None:
        """A rank finished a copy; once every rank has, the job's KV has moved: returns it
        (the caller finishes it if it was aborted meanwhile)."""
        key = (msg.request_id, msg.direction)
        acked, slowest = self._acks.get(key, (0, 0.0))
        acked, slowest = acked + 1, max(slowest, msg.seconds)
        self._acks[key] = (acked, slowest)
        if acked < self.num_ackers:
            return None
        del self._acks[key]
        direction, src, dst = self._moving.pop(msg.request_id)
        # The copy took as long as its slowest rank: the job could not run before that.
        event = "kv_offload_done" if direction is CopyDirection.OFFLOAD else "kv_upload_done"
        self._log.info(event, request_id=msg.request_id, tick=msg.tick, blocks=len(dst),
                       seconds=round(slowest, 6))
        if self.on_done is not None:
            self.on_done(direction, len(dst), slowest)
        job = self.jobs[msg.request_id]
        job.num_swaps += 1
        kept = job.block_ids[: job.num_kept_blocks]
        if direction is CopyDirection.OFFLOAD:
            self.num_offloads += 1
            self.device.free(src)  # registered ones stay cached: their KV is still there
            job.location = KVLocation.HOST
        else:
            self.num_uploads += 1
            self.host.free(src)
            job.location = KVLocation.DEVICE
            job.num_kept_blocks = 0
            # New blocks, not in the cache index: registered again after its next tick.
            job.num_registered = min(job.num_registered, len(kept))
        job.block_ids = kept + dst
        if direction is CopyDirection.UPLOAD:
            job.blocks_told = len(job.block_ids)  # the copy command told the workers the table
        return job


def shared_prefix(job: Job, device: KVBlockPool) -> int:
    """Leading entries of a device-resident job's table up to its last block that other
    jobs hold too: what stays on the device when it is offloaded."""
    for i in range(len(job.block_ids) - 1, -1, -1):
        if device.refcount(job.block_ids[i]) > 1:
            return i + 1
    return 0
