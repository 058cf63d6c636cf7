"""Cache manager actor: keeps the directory of every job's KV and plans the proactive moves.

The scheduler feeds it one `CacheUpdate` per tick (what changed, protocol/to_cache_manager.py);
it applies each to its directory in order and, once the inbox is drained, plans from the
directory as it now stands and answers with the moves (a `SwapPlan`) if there are any.
"""

from __future__ import annotations

from fastserve.protocol.to_cache_manager import CacheUpdate
from fastserve.runtime.actor import Actor
from fastserve.runtime.kv.cache_directory import CacheDirectory
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner
from fastserve.runtime.transport import Inbox, Outbox


class CacheManagerActor(Actor):
    """Applies the scheduler's updates to its directory, answers with offloads and uploads."""

    name = "cache_manager"

    def __init__(self, inbox: Inbox, to_scheduler: Outbox, planner: ProactiveSwapPlanner) -> None:
        super().__init__(inbox)
        self.to_scheduler = to_scheduler
        self.planner = planner
        self.directory = CacheDirectory()
        self._unplanned = 0  # updates applied since the last plan (more than one: it lags)
        self.handlers = {CacheUpdate: self._on_update}

    async def _on_update(self, update: CacheUpdate) -> None:
        # Every update is applied (each holds changes the next does not repeat); only the
        # plan is skipped for the ones that queued up behind it.
        self.directory.apply(update)
        self._unplanned += 1

    def has_work(self) -> bool:
        return self._unplanned > 0

    async def step(self) -> None:
        plan = self.planner.plan(self.directory)
        skipped, self._unplanned = self._unplanned - 1, 0
        if plan.offload or plan.upload:
            d = self.directory
            self.log.debug(
                "swap_plan",
                tick=d.tick,
                offload=plan.offload,
                upload=plan.upload,
                free_device=d.free_device_blocks,
                free_host=d.free_host_blocks,
                skipped=skipped,  # updates it never planned for alone: the plan came late
            )
            await self.to_scheduler.send(plan)
