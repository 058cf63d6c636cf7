"""Self-healing pieces of the supervisor: how often to restart, and telling the frontend.

When an engine process (scheduler, cache manager, a worker) dies, the supervisor kills the
rest of the engine and starts a fresh generation of all of them; the frontend keeps its
HTTP port and its clients. All of the engine at once because its state is shared: the
scheduler's block tables mirror every worker's KV cache and the workers of a tp/pp group
share one torch.distributed group, so a survivor's state is worthless to a newcomer.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field

import zmq

from fastserve.protocol.codec import Codec
from fastserve.protocol.control import EngineDown, EngineUp
from fastserve.runtime.config import ServerConfig


@dataclass
class RestartPolicy:
    """Bounded restarts with exponential backoff.

    At most `max_restarts` restarts within any `window_s`: a crash loop (a bad GPU, a
    model that cannot load) must end in an exit a human or an orchestrator sees, not in
    restarting forever. The wait before the k-th restart of the window is
    `backoff_s * 2**k`, capped at `backoff_max_s`: quick for a one-off crash, slower when
    the cause persists (e.g. memory held by a process the kernel has not reaped yet).
    """

    max_restarts: int = 5
    window_s: float = 600.0
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    _restarts: deque[float] = field(default_factory=deque)  # monotonic times, oldest first

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> RestartPolicy | None:
        """None when restarts are off (max_restarts 0): any failure stops the server."""
        if cfg.max_restarts <= 0:
            return None
        return cls(
            cfg.max_restarts, cfg.restart_window_s, cfg.restart_backoff_s, cfg.restart_backoff_max_s
        )

    def next_delay(self, now: float) -> float | None:
        """Record a restart at `now`; the seconds to wait before it, None when exhausted."""
        while self._restarts and now - self._restarts[0] > self.window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return None
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** len(self._restarts))
        self._restarts.append(now)
        return delay

    @property
    def recent(self) -> int:
        """Restarts recorded in the current window (as of the last `next_delay`)."""
        return len(self._restarts)


class FrontendLink:
    """The supervisor's PUSH to the frontend's inbox, for EngineDown / EngineUp.

    The frontend binds that inbox for the scheduler's outputs; one more sender costs
    nothing and needs no new socket in the frontend. Sends never block: with the
    frontend gone there is nobody left to tell.
    """

    def __init__(self, ctx: zmq.Context, address: str) -> None:
        self._sock = ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(address)
        self._codec = Codec()

    def engine_down(self, generation: int, reason: str, restarting: bool) -> None:
        self._send(EngineDown(generation, reason, restarting))

    def engine_up(self, generation: int) -> None:
        self._send(EngineUp(generation))

    def _send(self, message: object) -> None:
        with contextlib.suppress(zmq.Again):
            self._sock.send(self._codec.encode(message), zmq.NOBLOCK)

    def close(self) -> None:
        self._sock.close(0)
