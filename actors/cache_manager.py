"""Cache manager actor: the directory of every job's KV and the proactive swap planner."""

from __future__ import annotations

from fastserve.protocol.to_cache_manager import CacheSnapshot
from fastserve.protocol.to_worker import Shutdown
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
        self.directory: dict[str, tuple[str, int]] = {}  # request id -> (location, blocks)
        self._latest: CacheSnapshot | None = None
        self.handlers = {CacheSnapshot: self._on_snapshot, Shutdown: self._on_shutdown}

    async def _on_snapshot(self, snap: CacheSnapshot) -> None:
        # Only the newest snapshot matters; older ones that queued up are skipped.
        self._latest = snap

    async def _on_shutdown(self, msg: Shutdown) -> None:
        self.request_stop()

    def has_work(self) -> bool:
        return self._latest is not None

    async def step(self) -> None:
        snap, self._latest = self._latest, None
        assert snap is not None
        self.directory = {j.request_id: (j.location, j.num_blocks) for j in snap.jobs}
        plan = self.planner.plan(snap)
        if plan.offload or plan.upload:
            self.log.debug(
                "swap_plan",
                tick=snap.tick,
                offload=plan.offload,
                upload=plan.upload,
                free_device=snap.free_device_blocks,
                free_host=snap.free_host_blocks,
            )
            await self.to_scheduler.send(plan)
