"""The simulator's KV memory: a device block pool, a host pool, and a reactive planner.

The real cache manager swaps proactively (the head of the priority order a few ticks
ahead, overlapped with compute). The simulator keeps a simpler rule that needs no
lookahead: before each iteration it makes room for the batch the policy wants now,
evicting the lowest-priority resident jobs that are not in it (to the host pool, or
dropping their KV for recomputation when the host is full) and uploading the wanted jobs
that sit on the host. Moved blocks are counted; the simulator either hides them behind
compute (a per-iteration copy budget, like proactive swapping on a copy stream) or adds
their time to the iteration (reactive swapping).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.sched.batching import BatchPick
from fastserve.runtime.sched.job import Job, KVLocation


class SimKVCache:
    """Device and host pools plus the per-job placement (kept in job.location/block_ids)."""

    def __init__(self, num_device_blocks: int, num_host_blocks: int, block_size: int) -> None:
        self.device = KVBlockPool(num_device_blocks, "device")
        self.host = KVBlockPool(num_host_blocks, "host")
        self.block_size = block_size
        self.blocks_moved = 0  # offloaded plus uploaded, since the last `take_moved`
        self.num_offloads = 0
        self.num_uploads = 0
        self.num_recomputes = 0  # KV dropped because the host pool was full
        self.peak_device_used = 0

    def take_moved(self) -> int:
        moved, self.blocks_moved = self.blocks_moved, 0
        return moved

    def grow(self, entries: Sequence[BatchPick]) -> None:
        """Allocate the blocks each entry needs for this iteration's tokens."""
        for entry in entries:
            job = entry.job
            if entry.new_blocks:
                job.block_ids.extend(self.device.allocate(entry.new_blocks))
            job.location = KVLocation.DEVICE
        self.peak_device_used = max(self.peak_device_used, self.device.num_used)

    def release(self, job: Job) -> None:
        """A job finished: free whatever it holds."""
        pool = self.device if job.location is KVLocation.DEVICE else self.host
        if job.block_ids:
            pool.free(job.block_ids)
        job.block_ids = []
        job.location = KVLocation.NONE

    def make_room(
        self,
        wanted: Sequence[BatchPick],
        order: Sequence[Job],
        max_offload: float = math.inf,
        max_upload: float = math.inf,
    ) -> None:
        """Evict unwanted residents (lowest priority first) and upload wanted host jobs.

        `max_offload` / `max_upload` cap the blocks moved each way (a job moves whole, so
        the last one may overshoot): the copy bandwidth that hides behind one iteration.
        """
        need = sum(e.new_blocks for e in wanted)
        if need > self.device.num_free:
            keep = {id(e.job) for e in wanted}
            moved = 0
            for job in reversed(order):
                if self.device.num_free >= need or moved >= max_offload:
                    break
                if job.location is KVLocation.DEVICE and job.block_ids and id(job) not in keep:
                    moved += len(job.block_ids)
                    self.evict(job)
        moved = 0
        for entry in wanted:
            job = entry.job
            if moved >= max_upload:
                break
            if job.location is KVLocation.HOST and self.device.can_allocate(len(job.block_ids)):
                moved += len(job.block_ids)
                self.upload(job)

    def evict_lowest(self, order: Sequence[Job], spare: Job | None) -> bool:
        """Evict the lowest-priority resident job other than `spare`; False if none."""
        for job in reversed(order):
            if job is not spare and job.location is KVLocation.DEVICE and job.block_ids:
                self.evict(job)
                return True
        return False

    def evict(self, job: Job) -> None:
        """Offload to the host pool, or drop the KV (recompute later) if the host is full."""
        n = len(job.block_ids)
        self.device.free(job.block_ids)
        if self.host.can_allocate(n):
            job.block_ids = self.host.allocate(n)
            job.location = KVLocation.HOST
            self.blocks_moved += n
            self.num_offloads += 1
            job.num_swaps += 1
        else:
            job.block_ids = []
            job.location = KVLocation.NONE
            job.num_computed = 0  # prompt and outputs so far are prefilled again
            self.num_recomputes += 1

    def upload(self, job: Job) -> None:
        n = len(job.block_ids)
        self.host.free(job.block_ids)
        job.block_ids = self.device.allocate(n)
        job.location = KVLocation.DEVICE
        self.blocks_moved += n
        self.num_uploads += 1
        job.num_swaps += 1
        self.peak_device_used = max(self.peak_device_used, self.device.num_used)
