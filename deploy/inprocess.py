"""All actors of a server in one event loop, over in-memory inboxes (tests, notebooks).

Same actors, same codec, same loop shape as the multi-process server; only the transport
differs. The frontend's HTTP server is not started: callers use the FrontendService.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastserve.actors.cache_manager import CacheManagerActor
from fastserve.actors.frontend import FrontendActor
from fastserve.actors.scheduler import SchedulerActor
from fastserve.actors.worker import WorkerActor
from fastserve.deploy.builders import kv_block_bytes, make_runner, make_scheduler_core
from fastserve.runtime.actor import Actor
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner
from fastserve.runtime.transport import MemoryInbox, MemoryOutbox


@dataclass
class InProcessServer:
    """The running actors; `frontend.service` is the entry point for requests."""

    frontend: FrontendActor
    scheduler: SchedulerActor
    cache_manager: CacheManagerActor
    worker: WorkerActor

    @property
    def service(self) -> FrontendService:
        return self.frontend.service

    @property
    def actors(self) -> list[Actor]:
        return [self.frontend, self.scheduler, self.cache_manager, self.worker]


def build_inprocess(cfg: ServerConfig) -> InProcessServer:
    """Wire one worker, the scheduler, the cache manager and the frontend in memory."""
    from fastserve.deploy.serve import resolve_device_dtype

    cfg.device, cfg.dtype = resolve_device_dtype(cfg.device, cfg.dtype)
    cfg.scheduler.resolve_batch_limits(cfg.device)
    if cfg.cache.num_host_blocks is None:
        raise ValueError("an in-process server needs cache.num_host_blocks set")
    to_sched, to_front, to_cache, to_worker = (
        MemoryInbox(),
        MemoryInbox(),
        MemoryInbox(),
        MemoryInbox(),
    )
    frontend = FrontendActor.from_config(cfg, to_front, MemoryOutbox(to_sched))
    scheduler = SchedulerActor(
        to_sched,
        MemoryOutbox(to_worker),
        MemoryOutbox(to_front),
        MemoryOutbox(to_cache),
        make_scheduler_core(cfg, 1),
        max_ticks_in_flight=cfg.max_ticks_in_flight(),
        kv_block_bytes=kv_block_bytes(cfg),
    )
    planner = ProactiveSwapPlanner(cfg.cache.watermark, cfg.cache.lookahead_ticks)
    cache_manager = CacheManagerActor(to_cache, MemoryOutbox(to_sched), planner)
    worker = WorkerActor(
        to_worker, MemoryOutbox(to_sched), make_runner(cfg), feeds_samples=cfg.async_scheduling()
    )
    return InProcessServer(frontend, scheduler, cache_manager, worker)


@asynccontextmanager
async def run_inprocess(cfg: ServerConfig) -> AsyncIterator[InProcessServer]:
    """Run every actor loop as a task until the context exits."""
    server = build_inprocess(cfg)
    tasks = [asyncio.create_task(a.run(), name=a.name) for a in server.actors]
    try:
        yield server
    finally:
        for actor in server.actors:
            actor.request_stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    # An actor that died must fail the caller, as a dead process fails the server.
    for actor, result in zip(server.actors, results, strict=True):
        if isinstance(result, BaseException):
            raise RuntimeError(f"actor {actor.name} died") from result
