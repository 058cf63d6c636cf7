"""ProactiveSwapPlanner: the cache manager's policy for moving KV before it is needed.

Pure: one snapshot of the scheduler (jobs in priority order, where their KV lives, free
blocks) in, one plan out. Jobs that the policy will run within the look-ahead window are
"hot": their KV is uploaded now if it sits on the host. When free device blocks (after
room for the hot jobs' needs) fall under the watermark, the coldest resident jobs are
offloaded first. Hot jobs are never offloaded and cold jobs never uploaded, so a job
cannot bounce between the pools from one snapshot to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastserve.protocol.to_cache_manager import CacheSnapshot
from fastserve.protocol.to_scheduler import SwapPlan


@dataclass
class ProactiveSwapPlanner:
    """Watermark offloading and look-ahead uploading."""

    watermark: float = 0.1  # fraction of device blocks kept free for arriving jobs
    lookahead_ticks: int = 2  # hot window = this many batches of the priority order

    def plan(self, snap: CacheSnapshot) -> SwapPlan:
        out = SwapPlan(based_on_tick=snap.tick)
        if snap.total_host_blocks == 0:
            return out
        hot_n = max(1, snap.max_batch_jobs * self.lookahead_ticks)
        hot, cold = snap.jobs[:hot_n], snap.jobs[hot_n:]
        free = snap.free_device_blocks
        host_free = snap.free_host_blocks
        # Room the hot jobs need on the device: new prompts, growth, and uploads.
        demand = 0
        for job in hot:
            if job.location == "host":
                demand += job.num_blocks + 1
            elif job.location in ("none", "device"):
                demand += job.blocks_needed
        target_free = min(
            snap.total_device_blocks, demand + math.ceil(self.watermark * snap.total_device_blocks)
        )
        for job in reversed(cold):
            if free >= target_free:
                break
            if job.location != "device" or job.in_flight or job.num_blocks == 0:
                continue
            if host_free < job.num_blocks:
                continue
            out.offload.append(job.request_id)
            free += job.num_blocks
            host_free -= job.num_blocks
        # Upload in priority order while the uploads fit beside the blocks still needed.
        for job in hot:
            if job.location != "host":
                continue
            if free - (job.num_blocks + 1) < 0:
                break  # keep priority order: a later job must not jump this one
            out.upload.append(job.request_id)
            free -= job.num_blocks + 1
        return out
