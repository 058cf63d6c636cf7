"""The ZeroMQ client endpoint: FastServeClient's peer, the websocket endpoint's twin.

A ROUTER socket; every client is a DEALER whose frames arrive as [identity, codec frame].
Client -> endpoint: ClientSubmit (kind + the HTTP JSON body as text) or ClientAbort.
Endpoint -> client: ClientDelta ... then ClientDone or ClientError, per request id.
Many requests of many clients run at once; ids are scoped per client identity.

With CurveZMQ keys (`curve`), every connection is encrypted and only the client public
keys on the allow-list complete the handshake: any other peer gets nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from fastserve.protocol.client import (
    ClientAbort,
    ClientDelta,
    ClientDone,
    ClientError,
    ClientSubmit,
)
from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.runtime.curve_keys import CurveServerKeys, make_curve_server, start_authenticator
from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.events import Delta, Failed, Finished
from fastserve.runtime.frontend.json_body import load_json
from fastserve.runtime.frontend.service import FrontendService, RequestHandle

Key = tuple[bytes, str]  # (client identity, client request id)
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure
# On stop, how long running streams get to deliver their final frames (e.g. the shutdown
# error) before they are cancelled and the socket closes.
_DRAIN_S = 0.5


class _ClientGone(Exception):
    """The ROUTER no longer knows the client's identity: it disconnected."""


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
        self._sock: zmq.asyncio.Socket | None = None
        self._codec = Codec()
        self._handles: dict[Key, RequestHandle] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._receiver: asyncio.Task[None] | None = None
        self._curve = curve
        self._auth: AsyncioAuthenticator | None = None

    async def start(self) -> None:
        """Bind the socket and start serving."""
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        if self._curve is not None:
            # The ZAP handler must run before the first peer can handshake.
            self._auth = start_authenticator(self._ctx, self._curve)
            make_curve_server(sock, self._curve)
        # Sending to an identity that has disconnected raises EHOSTUNREACH instead of being
        # silently dropped: that is how a vanished client's requests get aborted.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Unbounded queues: with a bound, a slow client would make MANDATORY sends fail or
        # block, and one slow client must not stall the others' streams.
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(self.address)
        self._sock = sock
        self.bound_address = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._receiver = asyncio.create_task(self._receive_loop(), name="zmq-client-endpoint")
        _log.info("zmq_endpoint.listening", address=self.bound_address)

    async def stop(self) -> None:
        """Abort what still runs, let final frames leave, close the socket."""
        if self._receiver is not None:
            self._receiver.cancel()
            await asyncio.gather(self._receiver, return_exceptions=True)
            self._receiver = None
        if self._pumps:
            # Streams that already got their terminal event (e.g. FrontendActor's fail_all)
            # finish sending it; the rest are cancelled, which aborts their requests.
            await asyncio.wait(set(self._pumps), timeout=_DRAIN_S)
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._sock is not None:
            self._sock.close(linger=int(_DRAIN_S * 1000))
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    @property
    def num_running(self) -> int:
        """Requests of this endpoint that have not ended yet."""
        return len(self._handles)

    # -- receiving ----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart(copy=True)
            try:
                await self._on_frames(frames)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One client's bad luck (or our bug) must not stop the endpoint for all.
                _log.exception("zmq_endpoint.frame_failed")
                self._service.metrics.count_internal_error()

    async def _on_frames(self, frames: list[bytes]) -> None:
        identity = frames[0]
        if len(frames) != 2:
            await self._reject(identity, f"expected one frame per message, got {len(frames) - 1}")
            return
        try:
            message = self._codec.decode(frames[1]).message
        except ProtocolError as exc:
            await self._reject(identity, f"invalid frame: {exc}")
            return
        if isinstance(message, ClientSubmit):
            await self._on_submit(identity, message)
        elif isinstance(message, ClientAbort):
            handle = self._handles.get((identity, message.request_id))
            if handle is not None:  # an abort racing the request's end is harmless
                await handle.cancel()
        else:
            # Internal messages (SubmitRequest, ...) are valid frames but not for clients.
            await self._reject(identity, f"{type(message).__name__} is not a client message")

    async def _reject(self, identity: bytes, why: str) -> None:
        """Drop a frame we cannot tie to a request; tell its sender with a request id of ""."""
        _log.warning("zmq_endpoint.rejected_frame", error=why, client=identity.hex())
        await self._send_quietly(identity, ClientError("", 400, why, "invalid_request_error"))

    async def _on_submit(self, identity: bytes, msg: ClientSubmit) -> None:
        key = (identity, msg.request_id)
        try:
            if key in self._handles:
                raise RequestError(f"request `{msg.request_id}` is already running", param="id")
            body = _json_body(self._service, msg.body)
            handle = await self._service.submit(self._service.parse(msg.kind, body, choices=False))
        except RequestError as exc:
            await self._send_quietly(
                identity, ClientError(msg.request_id, exc.status, exc.message, exc.err_type)
            )
            return
        except Exception as exc:
            _log.exception("zmq_endpoint.submit_failed")
            self._service.metrics.count_internal_error()
            error = ClientError(msg.request_id, 500, f"internal error: {exc}", "server_error")
            await self._send_quietly(identity, error)
            return
        self._handles[key] = handle
        task = asyncio.create_task(self._pump(identity, msg.request_id, handle))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    # -- sending ------------------------------------------------------------------------

    async def _pump(self, identity: bytes, rid: str, handle: RequestHandle) -> None:
        """Forward one request's events to its client until the request ends."""
        try:
            if handle.parsed.echo_text:
                await self._send(identity, ClientDelta(rid, handle.parsed.echo_text, []))
            async for event in handle:
                if isinstance(event, Delta):
                    await self._send(
                        identity, ClientDelta(rid, event.text, event.token_ids, event.logprobs)
                    )
                elif isinstance(event, Finished):
                    usage = event.usage
                    done = ClientDone(
                        rid, event.finish_reason, usage.prompt_tokens, usage.completion_tokens
                    )
                    await self._send(identity, done)
                elif isinstance(event, Failed):
                    await self._send(identity, ClientError(rid, 500, event.message, "server_error"))
        except _ClientGone:
            _log.info("zmq_endpoint.client_gone", client=identity.hex(), request=rid)
        finally:
            self._handles.pop((identity, rid), None)
            await handle.cancel()  # no-op unless the request still runs

    async def _send(self, identity: bytes, message: object) -> None:
        if self._sock is None:
            raise _ClientGone  # stopped: nobody to deliver to
        try:
            await self._sock.send_multipart([identity, self._codec.encode(message)])
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                raise _ClientGone from exc
            raise

    async def _send_quietly(self, identity: bytes, message: object) -> None:
        """Send a reply that needs no follow-up: a gone client just does not get it."""
        with contextlib.suppress(_ClientGone):
            await self._send(identity, message)


def _json_body(service: FrontendService, text: str) -> object:
    """The body as the HTTP handler would see it; invalid JSON is a 400, counted as rejected."""
    service.precheck()  # overload and drain refusals before decoding, as over HTTP
    try:
        return load_json(text)
    except RequestError as exc:
        service.count_rejection(exc)
        raise
