"""Messages to the cache manager: what changed in the scheduler's KV since the last update.

The scheduler sends one `CacheUpdate` per tick. The first carries the pools' geometry;
after that each carries only the jobs whose KV changed (admitted jobs come as their first
entry), the jobs that finished, and the priority order when it changed. The cache manager
applies them in sequence to its directory (runtime/kv/cache_directory.py), so a lost or
reordered update is an error, not a stale view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import KVLocation


@dataclass
class KVPools:
    """What does not change while the scheduler lives: sent in its first update."""

    total_device_blocks: int  # device pool size
    total_host_blocks: int  # host pool size (0: no offloading)
    block_size: int  # tokens per block
    max_batch_jobs: int  # most jobs in one tick (the planner's look-ahead is counted in ticks)


@dataclass
class JobKV:
    """One job's directory entry: where its KV lives now, in blocks."""

    request_id: str  # job
    location: KVLocation  # device, host, on its way (to_host / to_device), or none yet
    num_tokens: int  # prompt plus generated tokens (its next step needs room for one more)
    device_blocks: int  # entries of its block table held in the device pool
    host_blocks: int  # entries held in the host pool (offloaded, or copies in flight)
    shared_blocks: int  # leading device entries that never move (prefix blocks others hold)
    in_flight: bool  # part of a tick being executed (cannot move now)


@dataclass
class CacheUpdate:
    """The scheduler's KV changes since its previous update, after planning a tick."""

    seq: int  # 1, 2, 3, ...: the cache manager checks that none is missing
    tick: int  # tick just planned
    free_device_blocks: int  # device blocks free after this tick's allocations
    free_host_blocks: int  # host blocks free
    pools: KVPools | None = None  # in the first update only
    changed: list[JobKV] = field(default_factory=list)  # admitted jobs and changed entries
    finished: list[str] = field(default_factory=list)  # jobs gone since (finished or failed)
    order: list[str] | None = None  # every live job, most urgent first; None: as before
