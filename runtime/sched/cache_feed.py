"""CacheFeed: the scheduler's side of the cache manager's directory.

The core tells the feed which jobs it changed (`touch`) and which left (`forget`); after
each tick `update` turns that into one `CacheUpdate`: an entry per touched job, read from
the job as it is now, the jobs gone, and the priority order if it moved. A tick touches
the jobs it ran or moved, not every live job, so the message and the work to build it
follow what changed.

One change is not the core's to see: whether a job's leading blocks are shared (what an
offload leaves on the device) changes when *another* job starts on them or frees them.
The device pool counts those events (`KVBlockPool.sharing_changes`); when it moved, the
feed looks again at every resident job and re-sends the ones whose count differs.
"""

from __future__ import annotations

from fastserve.protocol.common import KVLocation
from fastserve.protocol.to_cache_manager import CacheUpdate, JobKV, KVPools
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.swap_book import shared_prefix


class CacheFeed:
    """Changes the cache manager has not been told yet, and the update that tells it."""

    def __init__(
        self, device: KVBlockPool, host: KVBlockPool, block_size: int, max_batch_jobs: int
    ) -> None:
        self.device = device
        self.host = host
        self._pools: KVPools | None = KVPools(
            device.num_blocks, host.num_blocks, block_size, max_batch_jobs
        )  # sent once, with the first update
        self._seq = 0
        self._touched: dict[str, Job] = {}  # jobs whose entry changed since the last update
        self._finished: list[str] = []  # jobs the cache manager knows that have left since
        self._shared: dict[str, int] = {}  # job the cache manager knows -> its shared_blocks
        self._order: list[str] = []  # the order last sent
        self._sharing = device.sharing_changes  # the pool's count when last looked at

    def touch(self, job: Job) -> None:
        """The job's KV placement, size or state changed (or it is new)."""
        self._touched[job.request_id] = job

    def touch_moved(self, plan: TickPlan, jobs: dict[str, Job]) -> None:
        """The jobs whose KV a tick starts to move, or drops to be recomputed later (listed
        with the released jobs; the finished ones among those are no longer in `jobs`)."""
        for copy in plan.swap_out + plan.swap_in:
            self._touched[copy.request_id] = jobs[copy.request_id]
        for rid in plan.released:
            if rid in jobs:
                self._touched[rid] = jobs[rid]

    def forget(self, request_id: str) -> None:
        """The job left the scheduler."""
        self._touched.pop(request_id, None)
        if self._shared.pop(request_id, None) is not None:
            self._finished.append(request_id)

    def update(self, tick: int, order: list[Job], jobs: dict[str, Job]) -> CacheUpdate:
        """What changed since the last update; `order` is the tick's priority order."""
        if self.device.sharing_changes != self._sharing:
            self._sharing = self.device.sharing_changes
            touched, known = self._touched, self._shared
            for rid, job in jobs.items():
                if (
                    job.location is KVLocation.DEVICE
                    and rid not in touched
                    and shared_prefix(job, self.device) != known.get(rid)
                ):
                    touched[rid] = job
        changed = [self._entry(job) for job in self._touched.values()]
        ids = [job.request_id for job in order]
        self._seq += 1
        update = CacheUpdate(
            self._seq,
            tick,
            self.device.num_free,
            self.host.num_free,
            self._pools,
            changed,
            self._finished,
            None if ids == self._order else ids,
        )
        self._pools, self._touched, self._finished = None, {}, []
        self._order = ids
        return update

    def _entry(self, job: Job) -> JobKV:
        n, kept = len(job.block_ids), job.num_kept_blocks
        loc = job.location
        if loc is KVLocation.DEVICE:
            device, host, shared = n, 0, shared_prefix(job, self.device)
        elif loc is KVLocation.HOST:
            device, host, shared = kept, n - kept, kept
        elif loc is KVLocation.NONE:
            device, host, shared = n, 0, kept
        else:  # a copy in flight holds its source and its destination blocks
            device, host, shared = n, n - kept, kept
        self._shared[job.request_id] = shared
        return JobKV(job.request_id, loc, job.num_tokens, device, host, shared, job.in_flight)
