"""Frontend actor: the HTTP/websocket server in front of the scheduler.

The logic lives in `fastserve.runtime.frontend` and knows nothing of ZeroMQ. This shell
builds the service with a `send` that writes to the scheduler's outbox, feeds it every
message from the scheduler, and runs the HTTP server in the same event loop.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from fastserve.protocol.control import EngineDown, EngineUp
from fastserve.protocol.to_frontend import OutputBatch, SchedulerStats
from fastserve.runtime.actor import Actor
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.curve_keys import CurveServerKeys
from fastserve.runtime.frontend.options import FrontendOptions
from fastserve.runtime.frontend.service import FrontendService, RequestHandle, Send
from fastserve.runtime.frontend.zmq_endpoint import ZmqClientEndpoint
from fastserve.runtime.transport import Inbox, Outbox

__all__ = ["FrontendActor", "FrontendService", "RequestHandle", "Send", "start_http_server"]


async def start_http_server(
    service: FrontendService, host: str = "127.0.0.1", port: int = 8000
) -> web.AppRunner:
    """Serve `service` on host:port; stop it with `await runner.cleanup()`."""
    # Access logs would duplicate the structured request logs the service writes.
    # On stop, handlers still writing (the last bytes of a drained response) get 5 s.
    runner = web.AppRunner(service.build_app(), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


class FrontendActor(Actor):
    """Receives OutputBatch messages for the service; serves HTTP (and, when configured,
    the ZeroMQ client endpoint) while it runs."""

    name = "frontend"

    def __init__(
        self,
        inbox: Inbox,
        service: FrontendService,
        host: str,
        port: int,
        zmq_address: str = "",
        curve: CurveServerKeys | None = None,
        to_scheduler: Outbox | None = None,
    ) -> None:
        super().__init__(inbox)
        self.service = service
        self.to_scheduler = to_scheduler  # reset when the engine is replaced
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None
        self._zmq = ZmqClientEndpoint(service, zmq_address, curve=curve) if zmq_address else None
        self._drain: asyncio.Task[None] | None = None
        self.handlers = {
            OutputBatch: self.service.handle_output_batch,
            SchedulerStats: self._on_stats,
            EngineDown: self._on_engine_down,
            EngineUp: self._on_engine_up,
        }

    @classmethod
    def from_config(cls, cfg: ServerConfig, inbox: Inbox, to_scheduler: Outbox) -> FrontendActor:
        from fastserve.runtime.sched.profile_cache import load_cost_model

        options = FrontendOptions(
            api_keys=tuple(cfg.api_keys),
            metrics_public=cfg.metrics_public,
            max_queued_requests=cfg.max_queued_requests,
            max_queued_tokens=cfg.max_queued_tokens,
            drain_timeout_s=cfg.drain_timeout_s,
            cost_model=load_cost_model(cfg),  # the scheduler's too: Retry-After's fallback
            max_batch_jobs=cfg.scheduler.max_batch_jobs,
        )
        curve = None
        if cfg.zmq_curve_secret_file:
            curve = CurveServerKeys.load(cfg.zmq_curve_secret_file, cfg.zmq_allowed_clients)
        service = FrontendService(
            to_scheduler.send,
            model_dir=cfg.model,
            served_model_name=cfg.served_model_name,
            max_model_len=cfg.max_model_len,
            default_max_tokens=cfg.default_max_tokens,
            request_id_prefix=f"req-{uuid.uuid4().hex[:6]}-",  # unique per run
            options=options,
        )
        return cls(
            inbox, service, cfg.host, cfg.port, cfg.zmq_client_address, curve, to_scheduler
        )

    async def _on_stats(self, stats: SchedulerStats) -> None:
        if not self.service.restarting:  # a dead scheduler's last gauges are not news
            self.service.metrics.scheduler = stats

    async def _on_engine_down(self, msg: EngineDown) -> None:
        """The supervisor saw an engine process die: fail every open request now (their
        tokens will never come) and stop accepting until the new generation is ready."""
        self.log.warning(
            "engine.down", generation=msg.generation, reason=msg.reason, restarting=msg.restarting
        )
        if msg.restarting:
            self.service.restarting = True
            self.service.metrics.engine_restarting = True
            why = f"the engine failed ({msg.reason}); the server is restarting it: retry"
        else:
            self.service.start_draining()
            why = f"the engine failed ({msg.reason}); the server is shutting down"
        self.service.metrics.scheduler = None
        await self.service.fail_all(why)
        self._reset_scheduler_link()

    async def _on_engine_up(self, msg: EngineUp) -> None:
        self._reset_scheduler_link()  # whatever queued meanwhile was for nobody
        self.service.restarting = False
        self.service.metrics.engine_restarting = False
        self.service.metrics.count_engine_restart()
        self.log.info("engine.up", generation=msg.generation)

    def _reset_scheduler_link(self) -> None:
        """Requests and aborts queued for the dead scheduler must not reach its successor
        (it would run requests the frontend has already failed). Outputs that the dead
        one sent before dying are harmless: their request ids are no longer known here,
        and ids are never reused (one counter for the frontend's life)."""
        if self.to_scheduler is not None:
            self.to_scheduler.reset()

    def terminate(self) -> None:
        """SIGTERM: refuse new requests (503), let in-flight ones finish, then stop.

        The loop keeps running meanwhile: it is what delivers the scheduler's outputs to
        the requests being drained. A second SIGTERM stops at once.
        """
        if self._drain is not None:
            self.request_stop()
            return
        self.service.start_draining()
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        running = self.service.num_running
        timeout = self.service.options.drain_timeout_s
        self.log.info("drain.started", running=running, timeout_s=timeout)
        done = await self.service.wait_idle(timeout)
        # Requests still running now are failed by stop() ("server is shutting down").
        self.log.info("drain.finished", complete=done, left=self.service.num_running)
        self.request_stop()

    async def start(self) -> None:
        self._runner = await start_http_server(self.service, self.host, self.port)
        if self._zmq is not None:
            await self._zmq.start()

    async def stop(self) -> None:
        await self.service.fail_all("server is shutting down")
        if self._zmq is not None:
            await self._zmq.stop()  # after fail_all, so its clients hear why their streams end
        if self._runner is not None:
            await self._runner.cleanup()
