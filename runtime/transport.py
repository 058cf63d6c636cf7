"""Inboxes and outboxes: how actors receive and send protocol messages.

Actors only see `Inbox` and `Outbox`. The ZeroMQ implementation lives in `zmq_transport`;
the in-memory one here lets tests run every actor in one event loop. Both pass every
message through the codec, so in-memory runs exercise the same validation as sockets.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from fastserve.protocol.codec import Codec


class Inbox(ABC):
    """Where an actor's messages arrive (from any number of senders)."""

    @abstractmethod
    async def recv(self) -> Any:
        """Wait for the next message."""

    @abstractmethod
    def drain(self) -> list[Any]:
        """Every message that has already arrived, without waiting."""

    def close(self) -> None:
        """Release resources."""


class Outbox(ABC):
    """A way to send messages to one destination (or, for a publisher, to all subscribers)."""

    @abstractmethod
    async def send(self, message: Any) -> None:
        """Queue a message for delivery; never blocks on a slow receiver."""

    def reset(self) -> None:
        """Drop whatever is queued and not yet delivered (the peer was replaced)."""

    def close(self) -> None:
        """Release resources."""


class MemoryInbox(Inbox):
    """An asyncio queue of encoded frames."""

    def __init__(self) -> None:
        self._frames: asyncio.Queue[bytes] = asyncio.Queue()
        self._codec = Codec()

    def deliver(self, frame: bytes) -> None:
        self._frames.put_nowait(frame)

    async def recv(self) -> Any:
        return self._codec.decode(await self._frames.get()).message

    def drain(self) -> list[Any]:
        out = []
        while not self._frames.empty():
            out.append(self._codec.decode(self._frames.get_nowait()).message)
        return out


class MemoryOutbox(Outbox):
    """Encodes once and delivers to one or more in-memory inboxes (fan-out = PUB/SUB)."""

    def __init__(self, *targets: MemoryInbox) -> None:
        self._targets = list(targets)
        self._codec = Codec()

    async def send(self, message: Any) -> None:
        frame = self._codec.encode(message)
        for inbox in self._targets:
            inbox.deliver(frame)
