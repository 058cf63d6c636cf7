"""CacheDirectory: the cache manager's record of where every job's KV lives.

It is fed the scheduler's `CacheUpdate`s in order (protocol/to_cache_manager.py): the
pools' geometry once, then per tick only the entries that changed, the jobs that left and
the priority order when it moved. Applying one costs what changed, not what is live; the
planner (swap_planner.py) reads the result. Pure: no I/O, no clock.

A missing or repeated update would leave entries that are silently wrong, so `apply`
refuses it (`DirectoryOutOfSync`): the cache manager fails, and with it the engine, which
restarts whole (deploy/healing.py) with a fresh scheduler and directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.protocol.common import KVLocation
from fastserve.protocol.to_cache_manager import CacheUpdate, JobKV, KVPools
from fastserve.runtime.kv.allocator import blocks_for_tokens


class DirectoryOutOfSync(RuntimeError):
    """An update that does not follow the last one applied."""


@dataclass
class CacheDirectory:
    """Every live job's KV placement, the priority order and the free blocks of both pools."""

    pools: KVPools | None = None  # from the first update
    entries: dict[str, JobKV] = field(default_factory=dict)  # request id -> latest entry
    order: list[str] = field(default_factory=list)  # latest priority order, most urgent first
    seq: int = 0  # last update applied
    tick: int = 0  # tick that update followed
    free_device_blocks: int = 0  # as of that update
    free_host_blocks: int = 0

    def apply(self, update: CacheUpdate) -> None:
        if update.seq != self.seq + 1:
            raise DirectoryOutOfSync(f"update {update.seq} after update {self.seq}")
        if update.pools is not None:
            self.pools = update.pools
        elif self.pools is None:
            raise DirectoryOutOfSync(f"update {update.seq} without the pools, none known yet")
        self.seq, self.tick = update.seq, update.tick
        self.free_device_blocks = update.free_device_blocks
        self.free_host_blocks = update.free_host_blocks
        for entry in update.changed:
            self.entries[entry.request_id] = entry
        for request_id in update.finished:
            self.entries.pop(request_id, None)
        if update.order is not None:
            self.order = update.order

    def ranked(self) -> list[JobKV]:
        """Entries in priority order. A job admitted after the order was taken has no rank
        until the next update; one that left since is skipped."""
        entries = self.entries
        return [entries[r] for r in self.order if r in entries]


def movable_blocks(entry: JobKV) -> int:
    """Blocks that moving the job copies: its own, never the shared ones that stay put."""
    if entry.location is KVLocation.DEVICE:
        return entry.device_blocks - entry.shared_blocks
    return entry.host_blocks


def blocks_needed(entry: JobKV, block_size: int) -> int:
    """Device blocks its next step needs beyond those it holds there (for a job not yet
    started: its whole prompt plus one token)."""
    return max(0, blocks_for_tokens(entry.num_tokens + 1, block_size) - entry.device_blocks)
