"""The shell around one actor in its own OS process: sockets, signals, readiness, failure."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import setproctitle
import uvloop
import zmq.asyncio

from fastserve.protocol.control import ActorFailed, ActorReady
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.logging import configure_logging, get_logger
from fastserve.runtime.zmq_transport import ZmqOutbox


def actor_main(role: str, config_json: str, rank: int = 0) -> None:
    """Entry point of a child process (a multiprocessing spawn target)."""
    cfg = ServerConfig.from_json(config_json)
    name = role if role not in ("worker",) else f"worker-{rank}"
    setproctitle.setproctitle(f"fastserve-{name}")
    configure_logging(name, cfg.log_level)
    # Ctrl-C reaches the whole process group; the supervisor decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = uvloop.run(_run(role, name, cfg, rank))
    sys.exit(code)


async def _run(role: str, name: str, cfg: ServerConfig, rank: int) -> int:
    from fastserve.deploy.builders import build_actor  # heavy imports after the fork

    log = get_logger()
    ctx = zmq.asyncio.Context()
    control = ZmqOutbox(ctx, cfg.endpoints.control)
    try:
        actor, info = await build_actor(role, cfg, ctx, rank)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, actor.terminate)
        await actor.start()
        await control.send(ActorReady(name, os.getpid(), info))
        log.info("actor_ready", **info)
        await actor.run()
        await actor.stop()
        log.info("actor_stopped")
        return 0
    except Exception as exc:
        log.exception("actor_failed", error=str(exc))
        await control.send(ActorFailed(name, os.getpid(), f"{type(exc).__name__}: {exc}"))
        await asyncio.sleep(0.2)  # let the failure message leave before the socket closes
        return 1
    finally:
        ctx.destroy(linger=500)
