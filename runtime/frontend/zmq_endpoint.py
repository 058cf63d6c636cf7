"""The ZeroMQ client endpoint: FastServeClient's peer, the websocket endpoint's twin.

A ROUTER socket (`runtime/zmq_router.py`); every client is a DEALER whose frames arrive as
[identity, codec frame]. Client -> endpoint: ClientSubmit (kind + the HTTP JSON body as
text) or ClientAbort. Endpoint -> client: ClientDelta ... then ClientDone or ClientError,
per request id. Many requests of many clients run at once in one `ClientSession`; ids are
scoped per client identity.

With CurveZMQ keys (`curve`), every connection is encrypted and only the client public
keys on the allow-list complete the handshake: any other peer gets nothing at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import zmq.asyncio

from fastserve.protocol.client import (
    ClientAbort,
    ClientDelta,
    ClientDone,
    ClientError,
    ClientSubmit,
)
from fastserve.runtime.curve_keys import CurveServerKeys
from fastserve.runtime.frontend.client_session import ClientSession
from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.events import Usage
from fastserve.runtime.frontend.json_body import load_json
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.zmq_router import BadFrame, PeerGone, ZmqRouter

Key = tuple[bytes, str]  # (client identity, client request id)
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure
# On stop, how long running streams get to deliver their final frames (e.g. the shutdown
# error) before they are cancelled and the socket closes.
_DRAIN_S = 0.5


class ZmqClientEndpoint:
    """Serves FrontendService requests to FastServeClient instances over ZeroMQ."""

    def __init__(
        self,
        service: FrontendService,
        address: str,
        ctx: zmq.asyncio.Context | None = None,
        curve: CurveServerKeys | None = None,
    ) -> None:
        self._service = service
        self.address = address  # as configured; `bound_address` has the resolved port
        self.bound_address = ""
        self._own_ctx = ctx is None  # made in start(), so an unstarted endpoint holds nothing
        self._ctx = ctx
        self._curve = curve
        self._router: ZmqRouter | None = None
        self._requests: ClientSession[Key] = ClientSession(service, self, "zmq_endpoint")
        self._receiver: asyncio.Task[None] | None = None
        # Any other message type is a valid frame but not a client's (SubmitRequest, ...).
        self._handlers: dict[type, Callable[[bytes, Any], Awaitable[None]]] = {
            ClientSubmit: self._on_submit,
            ClientAbort: self._on_abort,
            BadFrame: self._on_bad_frame,
        }

    async def start(self) -> None:
        """Bind the socket and start serving."""
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        self._router = ZmqRouter(self._ctx, self.address, self._curve)
        self.bound_address = self._router.bound_address
        self._receiver = asyncio.create_task(self._receive_loop(), name="zmq-client-endpoint")
        _log.info("zmq_endpoint.listening", address=self.bound_address)

    async def stop(self) -> None:
        """Abort what still runs, let final frames leave, close the socket."""
        if self._receiver is not None:
            self._receiver.cancel()
            await asyncio.gather(self._receiver, return_exceptions=True)
            self._receiver = None
        await self._requests.close(drain_s=_DRAIN_S)
        if self._router is not None:
            self._router.close(linger_ms=int(_DRAIN_S * 1000))
            self._router = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    @property
    def num_running(self) -> int:
        """Requests of this endpoint that have not ended yet."""
        return self._requests.num_running

    # -- receiving ----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._router is not None
        while True:
            identity, message = await self._router.recv()
            try:
                await self._handlers.get(type(message), self._on_other)(identity, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One client's bad luck (or our bug) must not stop the endpoint for all.
                _log.exception("zmq_endpoint.frame_failed")
                self._service.metrics.count_internal_error()

    async def _on_submit(self, identity: bytes, msg: ClientSubmit) -> None:
        await self._requests.submit(
            (identity, msg.request_id), msg.kind, lambda: _json_body(self._service, msg.body)
        )

    async def _on_abort(self, identity: bytes, msg: ClientAbort) -> None:
        await self._requests.abort((identity, msg.request_id))

    async def _on_bad_frame(self, identity: bytes, bad: BadFrame) -> None:
        await self._reject(identity, bad.why)

    async def _on_other(self, identity: bytes, msg: object) -> None:
        await self._reject(identity, f"{type(msg).__name__} is not a client message")

    async def _reject(self, identity: bytes, why: str) -> None:
        """Drop a frame we cannot tie to a request; tell its sender with a request id of ""."""
        _log.warning("zmq_endpoint.rejected_frame", error=why, client=identity.hex())
        error = ClientError("", 400, why, "invalid_request_error")
        await self._requests.reply(self._send(identity, error))

    # -- ClientWire: the messages of a request's outcome ----------------------------------

    async def delta(
        self, key: Key, text: str, token_ids: list[int], logprobs: list[float] | None
    ) -> None:
        await self._send(key[0], ClientDelta(key[1], text, token_ids, logprobs or []))

    async def done(self, key: Key, finish_reason: str, usage: Usage) -> None:
        done = ClientDone(key[1], finish_reason, usage.prompt_tokens, usage.completion_tokens)
        await self._send(key[0], done)

    async def rejected(self, key: Key, exc: RequestError) -> None:
        await self._send(key[0], ClientError(key[1], exc.status, exc.message, exc.err_type))

    async def failed(self, key: Key, message: str) -> None:
        await self._send(key[0], ClientError(key[1], 500, message, "server_error"))

    async def _send(self, identity: bytes, message: object) -> None:
        if self._router is None:
            # Stopped: nobody to deliver to (PeerGone, as a vanished client would be).
            raise PeerGone("the endpoint is stopped")
        await self._router.send(identity, message)


def _json_body(service: FrontendService, text: str) -> object:
    """The body as the HTTP handler would see it; invalid JSON is a 400, counted as rejected."""
    service.precheck()  # overload and drain refusals before decoding, as over HTTP
    try:
        return load_json(text)
    except RequestError as exc:
        service.count_rejection(exc)
        raise
