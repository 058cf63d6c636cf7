"""Start the actor processes of one node, wait for readiness, watch them, stop them."""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

import zmq

from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.protocol.control import ActorFailed, ActorReady
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.logging import get_logger


class ServerFailure(RuntimeError):
    """An actor failed, died, or did not become ready in time."""


@dataclass
class ChildSpec:
    """One process to start."""

    role: str  # frontend | scheduler | worker | cache_manager
    rank: int = 0  # worker rank

    @property
    def name(self) -> str:
        return f"worker-{self.rank}" if self.role == "worker" else self.role


class Supervisor:
    """Owns the child processes of this node and the control socket they report to."""

    def __init__(self, cfg: ServerConfig, children: list[ChildSpec]) -> None:
        self.cfg = cfg
        self.children = children
        self.procs: dict[str, mp.process.BaseProcess] = {}
        self.log = get_logger()
        self._zctx = zmq.Context()
        self._control = self._zctx.socket(zmq.PULL)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(cfg.endpoints.control)
        self._codec = Codec()
        self._stop = False
        self._hurry = False

    def start(self) -> None:
        """Spawn every child and wait until all said they are ready.

        The frontend starts last, once everything behind it is ready: a request it accepted
        earlier could be scheduled in a tick that a worker not yet subscribed would miss.
        """
        first = [c for c in self.children if c.role != "frontend"]
        last = [c for c in self.children if c.role == "frontend"]
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        for group in (first, last):
            self._spawn(group)
            self._wait_ready({c.name for c in group}, deadline)

    def _spawn(self, specs: list[ChildSpec]) -> None:
        ctx = mp.get_context("spawn")
        from fastserve.deploy.process import actor_main

        cfg_json = self.cfg.to_json()
        for spec in specs:
            proc = ctx.Process(
                target=actor_main,
                args=(spec.role, cfg_json, spec.rank),
                name=f"fastserve-{spec.name}",
                daemon=False,
            )
            proc.start()
            self.procs[spec.name] = proc
            self.log.info("actor_spawned", child=spec.name, child_pid=proc.pid)

    def _wait_ready(self, waiting: set[str], deadline: float) -> None:
        while waiting:
            if time.monotonic() > deadline:
                raise ServerFailure(
                    f"not ready after {self.cfg.ready_timeout_s:.0f}s: {sorted(waiting)}"
                )
            self._check_alive()
            msg = self._poll_control(0.2)
            if isinstance(msg, ActorReady):
                waiting.discard(msg.actor)
                self.log.info("actor_ready", child=msg.actor, **msg.info)

    def watch(self) -> int:
        """Block until a signal asks us to stop (0) or a child dies or fails (1).

        A signal drains first: the frontend finishes its in-flight requests (up to
        drain_timeout_s) while the processes behind it still serve them.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        drain = False
        try:
            while not self._stop:
                wait([p.sentinel for p in self.procs.values()], timeout=0.2)
                self._check_alive()
                self._poll_control(0)
            drain = True
            return 0
        except ServerFailure as exc:
            self.log.error("server_failed", error=str(exc))
            return 1
        finally:
            if drain:
                self._drain_frontend()
            self.shutdown()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self._hurry = self._stop  # a second signal cuts the drain short
        self._stop = True

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.exitcode is not None:
                raise ServerFailure(
                    f"actor {name} (pid {proc.pid}) exited with code {proc.exitcode}"
                )

    def _poll_control(self, timeout_s: float) -> object | None:
        if not self._control.poll(int(timeout_s * 1000)):
            return None
        try:
            msg = self._codec.decode(self._control.recv()).message
        except ProtocolError as exc:
            self.log.error("rejected_control_frame", error=str(exc))
            return None
        if isinstance(msg, ActorFailed):
            raise ServerFailure(f"actor {msg.actor} (pid {msg.pid}) failed: {msg.message}")
        return msg

    def _drain_frontend(self, grace_s: float = 10.0) -> None:
        """SIGTERM the frontend alone and wait for it to exit; stop early if another child
        dies (nothing could finish then)."""
        front = [p for n, p in self.procs.items() if n == "frontend" and p.exitcode is None]
        if not front:
            return
        front[0].terminate()  # FrontendActor.terminate: drain, then stop
        self.log.info("draining", timeout_s=self.cfg.drain_timeout_s)
        deadline = time.monotonic() + self.cfg.drain_timeout_s + grace_s
        while front[0].exitcode is None and time.monotonic() < deadline and not self._hurry:
            wait([p.sentinel for p in self.procs.values()], timeout=0.2)
            if any(p.exitcode is not None for n, p in self.procs.items() if n != "frontend"):
                self.log.warning("drain_aborted", reason="a process behind the frontend exited")
                return

    def shutdown(self, grace_s: float = 10.0) -> None:
        """SIGTERM every child, then SIGKILL whatever is still alive after the grace time."""
        for proc in self.procs.values():
            if proc.exitcode is None:
                proc.terminate()
        deadline = time.monotonic() + grace_s
        for name, proc in self.procs.items():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                self.log.warning("actor_killed", child=name)
                proc.kill()
                proc.join(2)
        self._control.close(0)
        self._zctx.term()
        self.log.info("server_stopped")
