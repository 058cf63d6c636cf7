"""The one loop shape every actor runs: block only when idle, drain, step.

An actor is logic between an inbox and outboxes. It never touches sockets or processes
itself, so the same object runs in its own process (over ZeroMQ) or, in tests, beside the
other actors in one event loop (over in-memory queues).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastserve.runtime.logging import get_logger
from fastserve.runtime.transport import Inbox

Handler = Callable[[Any], Awaitable[None]]


class UnknownMessage(TypeError):
    """A message type this actor has no handler for."""


class Actor:
    """Base class: subclasses fill `handlers` and override `has_work` / `step`."""

    name = "actor"

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.handlers: dict[type, Handler] = {}
        self.log = get_logger()
        self._wakeup = asyncio.Event()  # set by local async work (e.g. a finished copy)
        self._stopping = False

    def has_work(self) -> bool:
        """True when `step` can make progress without new messages."""
        return False

    async def step(self) -> None:
        """One unit of work (a tick for the scheduler, an iteration for a worker)."""

    async def start(self) -> None:
        """Called once before the loop (load models, connect)."""

    async def stop(self) -> None:
        """Called once after the loop ends."""

    def wake(self) -> None:
        """Make an idle loop re-check `has_work` (callable from the event loop thread)."""
        self._wakeup.set()

    def request_stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    def terminate(self) -> None:
        """SIGTERM: stop. An actor holding clients' work overrides it to finish that first."""
        self.request_stop()

    async def dispatch(self, message: Any) -> None:
        handler = self.handlers.get(type(message))
        if handler is None:
            raise UnknownMessage(f"{self.name} has no handler for {type(message).__name__}")
        await handler(message)

    async def run(self) -> None:
        """The actor loop; returns after `request_stop`."""
        while not self._stopping:
            if not self.has_work():
                await self._wait_for_input()
            for message in self.inbox.drain():
                await self.dispatch(message)
            if self.has_work() and not self._stopping:
                await self.step()
            # Let other tasks of this loop (HTTP handlers, copy callbacks) run.
            await asyncio.sleep(0)

    async def _wait_for_input(self) -> None:
        """Idle: wait for a message or a local wake-up, then handle the message if one came.

        The receive is never left pending across iterations, so messages are handled in
        exactly the order they arrived.
        """
        recv = asyncio.ensure_future(self.inbox.recv())
        waker = asyncio.ensure_future(self._wakeup.wait())
        await asyncio.wait({recv, waker}, return_when=asyncio.FIRST_COMPLETED)
        waker.cancel()
        self._wakeup.clear()
        if not recv.done():
            recv.cancel()
        try:
            message = await recv
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the actor itself is being cancelled
            return
        await self.dispatch(message)
