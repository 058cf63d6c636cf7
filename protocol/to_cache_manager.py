"""Messages to the cache manager: the scheduler's per-tick view of jobs and KV."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JobCacheState:
    """Where one job's KV is and how soon the policy wants it."""

    request_id: str  # job
    rank: int  # position in the policy's priority order, 0 = runs first
    location: str  # "none", "device", "host", "to_host" or "to_device"
    num_blocks: int  # blocks the job's KV holds (device or host)
    blocks_needed: int  # device blocks it needs to run its next step from its location
    in_flight: bool  # part of a tick being executed (cannot move now)


@dataclass
class CacheSnapshot:
    """The scheduler's state after planning a tick."""

    tick: int  # tick just planned
    free_device_blocks: int  # device blocks free after this tick's allocations
    total_device_blocks: int  # device pool size
    free_host_blocks: int  # host blocks free
    total_host_blocks: int  # host pool size (0: no offloading)
    max_batch_jobs: int  # most jobs in one tick
    jobs: list[JobCacheState]  # every unfinished job, in priority order
