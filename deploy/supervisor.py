"""Start the actor processes of one node, wait for readiness, watch them, stop them.

With a RestartPolicy the supervisor also heals: an engine process (scheduler, cache
manager, worker) that dies or reports ActorFailed makes it fail the frontend's open
requests at once, kill the rest of the engine, and start a new generation of it on the
same ipc paths after a backoff, while the frontend keeps serving /health ("restarting")
and refusing requests with 503. See deploy/healing.py.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait

import zmq

from fastserve.deploy.healing import FrontendLink, RestartPolicy
from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.protocol.control import ActorFailed, ActorReady
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.logging import get_logger


class ServerFailure(RuntimeError):
    """An actor failed, died, or did not become ready in time."""

    def __init__(self, message: str, actor: str | None = None) -> None:
        super().__init__(message)
        self.actor = actor  # the child at fault, when one is (None: e.g. a ready timeout)


class _StopRequested(Exception):
    """A signal arrived while the engine was being restarted."""


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

    def __init__(
        self,
        cfg: ServerConfig,
        children: list[ChildSpec],
        restarts: RestartPolicy | None = None,
        on_restart: Callable[[ServerConfig], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.children = children
        self.restarts = restarts  # None: a failure of any child stops the node
        self.on_restart = on_restart  # adjusts the config before a new generation spawns
        self.generation = 0  # of the engine processes; +1 per restart
        self.procs: dict[str, mp.process.BaseProcess] = {}
        self.log = get_logger()
        self._zctx = zmq.Context()
        self._control = self._zctx.socket(zmq.PULL)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(cfg.endpoints.control)
        self._codec = Codec()
        self._stop = False
        self._hurry = False
        self._front: FrontendLink | None = None
        if any(c.role == "frontend" for c in children):
            self._front = FrontendLink(self._zctx, cfg.endpoints.frontend_in)

    @property
    def engine(self) -> list[ChildSpec]:
        """Every child but the frontend: what a restart replaces."""
        return [c for c in self.children if c.role != "frontend"]

    def start(self) -> None:
        """Spawn every child and wait until all said they are ready.

        The frontend starts last, once everything behind it is ready: a request it accepted
        earlier could be scheduled in a tick that a worker not yet subscribed would miss.
        """
        first = self.engine
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
            if self._stop:
                raise _StopRequested()
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
        """Block until a signal asks us to stop (0) or a child fails past healing (1).

        A signal drains first: the frontend finishes its in-flight requests (up to
        drain_timeout_s) while the processes behind it still serve them.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        drain = False
        try:
            while not self._stop:
                try:
                    wait([p.sentinel for p in self.procs.values()], timeout=0.2)
                    self._check_alive()
                    self._poll_control(0)
                except ServerFailure as exc:
                    if not self._heal(exc):
                        return 1
            drain = True
            return 0
        except _StopRequested:
            return 0  # stopped mid-restart: nothing runs that a drain could finish
        finally:
            if drain:
                self._drain_frontend()
            self.shutdown()

    def _heal(self, exc: ServerFailure) -> bool:
        """Restart the engine after `exc`; False when the node must stop instead."""
        healable = (
            self.restarts is not None
            and self._front is not None
            and exc.actor is not None
            and exc.actor != "frontend"
        )
        reason = str(exc)
        while True:
            if not healable:
                self.log.error("server_failed", error=reason)
                self._tell_down(reason, restarting=False)
                return False
            assert self.restarts is not None
            self._tell_down(reason, restarting=True)  # open requests fail now, not at a timeout
            failed_at = time.monotonic()
            self._kill_engine()
            delay = self.restarts.next_delay(failed_at)
            if delay is None:
                self.log.error(
                    "restarts_exhausted",
                    error=reason,
                    max_restarts=self.restarts.max_restarts,
                    window_s=self.restarts.window_s,
                )
                healable = False
                continue
            self.log.warning(
                "engine_restarting",
                error=reason,
                generation=self.generation + 1,
                delay_s=delay,
                restarts_in_window=self.restarts.recent,
            )
            try:
                self._pause(delay)
                self._restart_engine(failed_at)
                return True
            except ServerFailure as again:  # the new generation failed too
                reason = str(again)
                healable = again.actor != "frontend"

    def _tell_down(self, reason: str, restarting: bool) -> None:
        if self._front is not None:
            self._front.engine_down(self.generation, reason, restarting)

    def _kill_engine(self) -> None:
        """SIGKILL every engine process still alive and reap them all. Nothing of theirs
        is worth a graceful stop, and a survivor must not talk to the next generation."""
        for spec in self.engine:
            proc = self.procs.pop(spec.name, None)
            if proc is None:
                continue
            if proc.exitcode is None:
                proc.kill()
            proc.join(5)

    def _pause(self, seconds: float) -> None:
        """The backoff: stays responsive to signals and to the frontend dying."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._stop:
                raise _StopRequested()
            self._check_alive()
            time.sleep(min(0.05, left))

    def _restart_engine(self, failed_at: float) -> None:
        self.generation += 1
        if self.on_restart is not None:
            self.on_restart(self.cfg)
        self._spawn(self.engine)
        self._wait_ready({c.name for c in self.engine}, time.monotonic() + self.cfg.ready_timeout_s)
        if self._front is not None:
            self._front.engine_up(self.generation)
        self.log.info(
            "engine_restarted",
            generation=self.generation,
            seconds=round(time.monotonic() - failed_at, 3),
        )

    def _on_signal(self, signum: int, frame: object) -> None:
        self.log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self._hurry = self._stop  # a second signal cuts the drain short
        self._stop = True

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.exitcode is not None:
                raise ServerFailure(
                    f"actor {name} (pid {proc.pid}) exited with code {proc.exitcode}", name
                )

    def _poll_control(self, timeout_s: float) -> object | None:
        if not self._control.poll(int(timeout_s * 1000)):
            return None
        try:
            msg = self._codec.decode(self._control.recv()).message
        except ProtocolError as exc:
            self.log.error("rejected_control_frame", error=str(exc))
            return None
        if isinstance(msg, ActorReady | ActorFailed) and msg.pid not in self._live_pids():
            # A killed generation's last words, read after its successor started.
            self.log.info("stale_control_message", child=msg.actor, child_pid=msg.pid)
            return None
        if isinstance(msg, ActorFailed):
            raise ServerFailure(
                f"actor {msg.actor} (pid {msg.pid}) failed: {msg.message}", msg.actor
            )
        return msg

    def _live_pids(self) -> set[int | None]:
        return {p.pid for p in self.procs.values()}

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
        if self._front is not None:
            self._front.close()
        self._zctx.term()
        self.log.info("server_stopped")
