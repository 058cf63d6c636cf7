"""Cache manager actor: runs the proactive swap planner on the scheduler's KV snapshots."""

from __future__ import annotations

from fastserve.protocol.to_cache_manager import CacheSnapshot
from fastserve.runtime.actor import Actor
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner
from fastserve.runtime.transport import Inbox, Outbox


class CacheManagerActor(Actor):
    """Receives the scheduler's per-tick snapshot, answers with offloads and uploads."""

    name = "cache_manager"

    def __init__(self, inbox: Inbox, to_scheduler: Outbox, planner: ProactiveSwapPlanner) -> None:
        super().__init__(inbox)
        self.to_scheduler = to_scheduler
        self.planner = planner
        self._latest: CacheSnapshot | None = None
        self._skipped = 0  # snapshots replaced before planning: the planner lags the ticks
        self.handlers = {CacheSnapshot: self._on_snapshot}

    async def _on_snapshot(self, snap: CacheSnapshot) -> None:
        # Only the newest snapshot matters; older ones that queued up are skipped.
        self._skipped += self._latest is not None
        self._latest = snap

    def has_work(self) -> bool:
        return self._latest is not None

    async def step(self) -> None:
        snap, self._latest = self._latest, None
        assert snap is not None
        plan = self.planner.plan(snap)
        skipped, self._skipped = self._skipped, 0
        if plan.offload or plan.upload:
            self.log.debug(
                "swap_plan",
                tick=snap.tick,
                offload=plan.offload,
                upload=plan.upload,
                free_device=snap.free_device_blocks,
                free_host=snap.free_host_blocks,
                skipped=skipped,  # snapshots it never planned for: the plan came late
            )
            await self.to_scheduler.send(plan)
