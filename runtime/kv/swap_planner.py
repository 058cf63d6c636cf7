"""ProactiveSwapPlanner: the cache manager's policy for moving KV before it is needed.

Pure: the cache manager's directory (jobs in priority order, where their KV lives, free
blocks) in, one plan out. Jobs that the policy will run within the look-ahead window are
"hot": their KV is uploaded now if it sits on the host. When free device blocks (after
room for the hot jobs' needs) fall under the watermark, the coldest resident jobs are
offloaded first. Hot jobs are never offloaded and cold jobs never uploaded, so a job
cannot bounce between the pools from one plan to the next.

The look-ahead is the policy's own priority order, not an estimate of when each job runs
next: the scheduler runs jobs in that order, so its head is what runs within the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastserve.protocol.common import KVLocation
from fastserve.protocol.to_scheduler import SwapPlan
from fastserve.runtime.kv.cache_directory import CacheDirectory, blocks_needed, movable_blocks

_DEVICE, _HOST, _NONE = KVLocation.DEVICE, KVLocation.HOST, KVLocation.NONE


@dataclass
class ProactiveSwapPlanner:
    """Watermark offloading and look-ahead uploading."""

    watermark: float = 0.1  # fraction of device blocks kept free for arriving jobs
    lookahead_ticks: int = 2  # hot window = this many batches of the priority order

    def plan(self, directory: CacheDirectory) -> SwapPlan:
        out = SwapPlan(based_on_tick=directory.tick)
        pools = directory.pools
        if pools is None or pools.total_host_blocks == 0:
            return out
        jobs = directory.ranked()
        hot_n = max(1, pools.max_batch_jobs * self.lookahead_ticks)
        hot, cold = jobs[:hot_n], jobs[hot_n:]
        free = directory.free_device_blocks
        host_free = directory.free_host_blocks
        # Room the hot jobs need on the device: new prompts, growth, and uploads.
        demand = 0
        for job in hot:
            if job.location is _HOST:
                demand += movable_blocks(job) + 1
            elif job.location is _NONE or job.location is _DEVICE:
                demand += blocks_needed(job, pools.block_size)
        target_free = min(
            pools.total_device_blocks,
            demand + math.ceil(self.watermark * pools.total_device_blocks),
        )
        for job in reversed(cold):
            if free >= target_free:
                break
            if job.location is not _DEVICE or job.in_flight:
                continue
            blocks = movable_blocks(job)
            if blocks == 0 or host_free < blocks:
                continue
            out.offload.append(job.request_id)
            free += blocks
            host_free -= blocks
        # Upload in priority order while the uploads fit beside the blocks still needed.
        for job in hot:
            if job.location is not _HOST:
                continue
            blocks = movable_blocks(job)
            if free - (blocks + 1) < 0:
                break  # keep priority order: a later job must not jump this one
            out.upload.append(job.request_id)
            free -= blocks + 1
        return out
