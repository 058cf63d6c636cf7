"""ZeroMQ inboxes and outboxes (pyzmq asyncio sockets, one frame per message)."""

from __future__ import annotations

from typing import Any

import zmq
import zmq.asyncio

from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.runtime.logging import get_logger
from fastserve.runtime.transport import Inbox, Outbox


class ZmqInbox(Inbox):
    """A bound PULL socket, or a SUB socket connected to a publisher."""

    def __init__(self, ctx: zmq.asyncio.Context, address: str, kind: str = "pull") -> None:
        if kind == "pull":
            self._sock = ctx.socket(zmq.PULL)
            self._sock.setsockopt(zmq.RCVHWM, 0)
            self._sock.bind(address)
        elif kind == "sub":
            self._sock = ctx.socket(zmq.SUB)
            self._sock.setsockopt(zmq.RCVHWM, 0)
            self._sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._sock.connect(address)
        else:
            raise ValueError(f"unknown inbox kind {kind!r}")
        self._sock.setsockopt(zmq.LINGER, 0)
        # A plain socket sharing the same handle: non-blocking reads without futures.
        self._sync = zmq.Socket.shadow(self._sock.underlying)
        self._codec = Codec()
        self._log = get_logger(socket=address)

    async def recv(self) -> Any:
        while True:
            frame = await self._sock.recv(copy=True)
            message = self._decode(frame)
            if message is not None:
                return message

    def drain(self) -> list[Any]:
        out = []
        while True:
            try:
                frame = self._sync.recv(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                return out
            message = self._decode(frame)
            if message is not None:
                out.append(message)

    def _decode(self, frame: bytes) -> Any | None:
        try:
            return self._codec.decode(frame).message
        except ProtocolError as exc:
            # A bad frame is dropped with a log line; the peer's own failure is its to report.
            self._log.error("rejected_frame", error=str(exc), size=len(frame))
            return None

    def close(self) -> None:
        self._sock.close(linger=0)


class ZmqOutbox(Outbox):
    """A PUSH socket connected to a peer's PULL, or a bound publisher.

    The publisher is an XPUB socket so that it can tell when its subscribers have joined:
    a PUB drops whatever it sends before a subscription arrives, and a subscriber that
    connected to the address before it was bound (a restarted scheduler) only retries
    every reconnect interval.
    """

    def __init__(self, ctx: zmq.asyncio.Context, address: str, kind: str = "push") -> None:
        if kind not in ("push", "pub"):
            raise ValueError(f"unknown outbox kind {kind!r}")
        self._ctx, self._address, self._kind = ctx, address, kind
        self._sock = self._open()
        self._codec = Codec()

    def _open(self) -> zmq.asyncio.Socket:
        if self._kind == "push":
            sock = self._ctx.socket(zmq.PUSH)
            sock.connect(self._address)
        else:
            sock = self._ctx.socket(zmq.XPUB)
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber's join, not the first
            sock.bind(self._address)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.LINGER, 1000)
        return sock

    async def send(self, message: Any) -> None:
        await self._sock.send(self._codec.encode(message), copy=False)

    async def wait_for_subscribers(self, count: int) -> None:
        """Return once `count` subscribers have joined this publisher (none sent before
        then is lost). The caller bounds the wait: the supervisor's readiness timeout."""
        if self._kind != "pub":
            raise ValueError("only a publishing outbox has subscribers")
        joined = 0
        while joined < count:
            frame = await self._sock.recv()
            joined += frame[:1] == b"\x01"  # 1: subscribe, 0: unsubscribe

    def reset(self) -> None:
        """A fresh PUSH socket to the same address, the old one closed without linger.

        A connected PUSH keeps what its peer never read and hands it to whoever binds
        the address next: after a restart the new scheduler would get requests the
        frontend has already failed. Closing with linger 0 drops them.
        """
        if self._kind != "push":
            raise ValueError("only a PUSH outbox can be reset")
        self._sock.close(linger=0)
        self._sock = self._open()

    def close(self) -> None:
        self._sock.close(linger=1000)
