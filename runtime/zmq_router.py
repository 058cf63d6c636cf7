"""A bound ROUTER socket speaking the codec: many DEALER peers, each addressed by identity.

The frontend's ZeroMQ client endpoint serves FastServeClient instances through it. Every
message is two frames, [peer identity, codec frame]; a peer that sends anything else, or
a frame the codec rejects, comes back as a `BadFrame` so the caller can answer it.

With CurveZMQ keys every connection is encrypted and only the client public keys on the
allow-list complete the handshake: any other peer gets nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.runtime.curve_keys import CurveServerKeys, make_curve_server, start_authenticator


class PeerGone(ConnectionResetError):
    """The ROUTER no longer knows the peer's identity (it disconnected), or it is closed.

    A ConnectionResetError, as a websocket's failed send is: a client session treats both
    the same way (stop streaming to that client, abort its request)."""


@dataclass
class BadFrame:
    """What arrived instead of a message: not [identity, one frame], or a frame the codec
    rejects. Returned, not raised, so a receive loop dispatches it like any message."""

    why: str  # what is wrong, for the sender and the log


class ZmqRouter:
    """A bound ROUTER socket: `recv` (identity, message) pairs, `send` to one identity."""

    def __init__(
        self, ctx: zmq.asyncio.Context, address: str, curve: CurveServerKeys | None = None
    ) -> None:
        sock = ctx.socket(zmq.ROUTER)
        self._auth: AsyncioAuthenticator | None = None
        if curve is not None:
            # The ZAP handler must run before the first peer can handshake.
            self._auth = start_authenticator(ctx, curve)
            make_curve_server(sock, curve)
        # Sending to an identity that has disconnected raises EHOSTUNREACH instead of being
        # silently dropped: that is how a vanished client's requests get aborted.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Unbounded queues: with a bound, a slow peer would make MANDATORY sends fail or
        # block, and one slow peer must not stall the others' streams.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(address)
        self._sock: zmq.asyncio.Socket | None = sock
        self.bound_address = sock.getsockopt_string(zmq.LAST_ENDPOINT)  # the resolved port
        self._codec = Codec()

    async def recv(self) -> tuple[bytes, Any]:
        """The next (identity, message), the message a BadFrame if it could not be read."""
        assert self._sock is not None
        frames = await self._sock.recv_multipart(copy=True)
        identity = frames[0]
        if len(frames) != 2:
            return identity, BadFrame(f"expected one frame per message, got {len(frames) - 1}")
        try:
            return identity, self._codec.decode(frames[1]).message
        except ProtocolError as exc:
            return identity, BadFrame(f"invalid frame: {exc}")

    async def send(self, identity: bytes, message: Any) -> None:
        """Queue `message` for one peer; raises PeerGone if it is gone (or we are closed)."""
        if self._sock is None:
            raise PeerGone("the router is closed")  # nobody to deliver to
        try:
            await self._sock.send_multipart([identity, self._codec.encode(message)])
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                raise PeerGone(identity.hex()) from exc
            raise

    def close(self, linger_ms: int) -> None:
        """Close the socket, giving queued frames `linger_ms` to leave; stop the ZAP handler."""
        if self._sock is not None:
            self._sock.close(linger=linger_ms)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
