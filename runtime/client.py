"""FastServe's Python client over ZeroMQ: streaming completions without HTTP.

Start the server with `fastserve serve --zmq-port 5555`, then::

    from fastserve.runtime.client import FastServeClient

    async with FastServeClient("tcp://127.0.0.1:5555") as client:
        async for delta in client.stream("chat", {"messages": [...], "max_tokens": 20}):
            print(delta.text, end="")
        result = await client.complete("completion", {"prompt": "Once", "max_tokens": 8})

Request bodies are the OpenAI HTTP API's bodies (`/v1/completions` for "completion",
`/v1/chat/completions` for "chat") and are validated exactly as over HTTP. Many requests
may run at once on one client, from any number of tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
import zmq
import zmq.asyncio

from fastserve.protocol.client import (
    ClientAbort,
    ClientDelta,
    ClientDone,
    ClientError,
    ClientSubmit,
)
from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.runtime.client_types import CompletionResult, FastServeError, Usage
from fastserve.runtime.curve_keys import (
    client_curve_keys,
    handshake_monitor,
    make_curve_client,
    watch_handshakes,
)

__all__ = ["ClientDelta", "CompletionResult", "FastServeClient", "FastServeError", "Usage"]
_log = structlog.get_logger(actor="client")
Reply = ClientDelta | ClientDone | ClientError


class ResponseStream:
    """The replies to one request: an async iterator of `ClientDelta`.

    Iteration ends after the server's `ClientDone` (then in `done`) and raises
    `FastServeError` on a `ClientError`. Leaving early — `break`, an exception, task
    cancellation — aborts the request on the server. `break` aborts as soon as the
    iterator is garbage collected; use ``async with client.stream(...) as s:`` (or call
    `aclose`) to abort at a precise point.
    """

    def __init__(self, client: FastServeClient, kind: str, body: Any, request_id: str) -> None:
        self.request_id = request_id  # this request's id, for `FastServeClient.abort`
        self._box: list[ClientDone] = []  # shared with the generator (no reference cycle)
        self._gen = client._run(kind, body, request_id, self._box)

    @property
    def done(self) -> ClientDone | None:
        """The server's final message (finish reason, usage) once the stream has ended."""
        return self._box[0] if self._box else None

    def __aiter__(self) -> AsyncIterator[ClientDelta]:
        return self._gen

    async def aclose(self) -> None:
        """Stop iterating; aborts the request if it is still running."""
        await self._gen.aclose()

    async def __aenter__(self) -> ResponseStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class FastServeClient:
    """An asyncio client of a FastServe server's ZeroMQ endpoint (a DEALER socket).

    Use it as ``async with FastServeClient("tcp://host:port") as client:``, or call
    `connect` and `close`. One background task receives every reply and hands it to the
    request it belongs to, by request id (generated here, unique per client).
    """

    def __init__(
        self,
        address: str,
        *,
        context: zmq.asyncio.Context | None = None,
        server_public_key: str | bytes | Path | None = None,
        client_keys: str | Path | tuple[bytes, bytes] | None = None,
    ) -> None:
        """`address`: the server's endpoint, e.g. "tcp://127.0.0.1:5555" or "ipc:///path".

        For a server with CurveZMQ keys: `server_public_key` is its public key (its .key
        file, Z85 bytes or "z85:KEY") and `client_keys` this client's key pair (a
        .key_secret file from `fastserve keygen`, or a (public, secret) pair of Z85 bytes)
        whose public key the server admits. A refused key fails the requests with
        FastServeError status 401; with a wrong server key the server never answers.
        """
        self._curve = client_curve_keys(server_public_key, client_keys)
        self._auth_failed: str | None = None  # set while the server refuses our key
        self._monitor: asyncio.Task[None] | None = None
        self.address = address
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.asyncio.Socket | None = None
        self._codec = Codec()
        self._routes: dict[str, asyncio.Queue[Reply | FastServeError]] = {}
        self._receiver: asyncio.Task[None] | None = None
        self._prefix = uuid.uuid4().hex[:8]
        self._next_id = 0

    async def connect(self) -> None:
        """Open the socket. ZeroMQ connects in the background and retries until the
        server is up, so this does not fail when the server is not (yet) there."""
        if self._sock is not None:
            return
        if self._ctx is None:
            self._ctx = zmq.asyncio.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 500)  # let a final abort leave on close
        if self._curve is not None:
            make_curve_client(sock, *self._curve)
            # A refused key is otherwise silent (the server sends nothing): watch for it.
            watch = watch_handshakes(handshake_monitor(sock), self._on_handshake)
            self._monitor = asyncio.create_task(watch)
        sock.connect(self.address)
        self._sock = sock
        self._receiver = asyncio.create_task(self._receive_loop(), name="fastserve-client")

    async def close(self) -> None:
        """Abort every unfinished request, then close the socket. Streams still being
        iterated end with `FastServeError` (status 0)."""
        if self._sock is None:
            return
        for rid in list(self._routes):
            await self._send(ClientAbort(rid))
        self._fail_all("the client is closed")
        for task in (self._receiver, self._monitor):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._monitor is not None:
            self._sock.disable_monitor()
        self._sock.close()
        self._sock = None
        if self._own_ctx and self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def __aenter__(self) -> FastServeClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def stream(
        self, kind: str, body: dict[str, Any], request_id: str | None = None
    ) -> ResponseStream:
        """Submit a request and stream its output as `ClientDelta` messages.

        `kind` is "completion" or "chat"; `body` the HTTP API's JSON body (its "stream"
        field is ignored: replies always stream). The request is sent when iteration
        starts. `request_id` defaults to a fresh id; the stream's `request_id` has it.
        Raises `FastServeError` (e.g. status 400 for an invalid body) while iterating.
        """
        if request_id is None:
            self._next_id += 1
            request_id = f"{self._prefix}-{self._next_id}"
        return ResponseStream(self, kind, body, request_id)

    async def complete(self, kind: str, body: dict[str, Any]) -> CompletionResult:
        """Run a request to its end and return the whole response.

        Raises `FastServeError` when the server rejects or fails it; cancelling the
        awaiting task aborts it on the server.
        """
        text: list[str] = []
        token_ids: list[int] = []
        logprobs: list[float] = []
        async with self.stream(kind, body) as stream:
            async for delta in stream:
                text.append(delta.text)
                token_ids += delta.token_ids
                logprobs += delta.logprobs
        done = stream.done
        assert done is not None  # the stream ended normally, so the server said done
        usage = Usage(done.prompt_tokens, done.completion_tokens)
        return CompletionResult("".join(text), token_ids, done.finish_reason, usage, logprobs)

    async def abort(self, request_id: str) -> None:
        """Stop a running request; its stream then ends with finish_reason "abort".
        Unknown or already finished ids are ignored."""
        if request_id in self._routes:
            await self._send(ClientAbort(request_id))

    # -- internals ----------------------------------------------------------------------

    async def _run(
        self, kind: str, body: Any, rid: str, box: list[ClientDone]
    ) -> AsyncGenerator[ClientDelta, None]:
        """The generator behind a ResponseStream (holds no reference to it: see its doc)."""
        if self._sock is None:
            raise FastServeError(0, "the client is not connected: use `async with` or connect()")
        if rid in self._routes:
            raise FastServeError(0, f"request id `{rid}` is already in use")
        if self._auth_failed is not None:
            raise FastServeError(401, self._auth_failed)
        queue: asyncio.Queue[Reply | FastServeError] = asyncio.Queue()
        self._routes[rid] = queue
        finished = False
        try:
            await self._send(ClientSubmit(rid, kind, json.dumps(body)))
            while True:
                reply = await queue.get()
                if isinstance(reply, ClientDelta):
                    yield reply
                    continue
                finished = True
                if isinstance(reply, ClientDone):
                    box.append(reply)
                    return
                if isinstance(reply, ClientError):
                    raise FastServeError(reply.status, reply.message, reply.type)
                raise reply  # the client's own failure
        finally:
            self._routes.pop(rid, None)  # late replies for this id are dropped
            if not finished and self._sock is not None:
                await self._send(ClientAbort(rid))

    async def _send(self, message: object) -> None:
        if self._sock is None:
            return  # closed: nothing can be sent, and close() already aborted everything
        frame = self._codec.encode(message)
        if isinstance(message, ClientAbort):
            # Never wait to abort: with no connection up (server gone, key refused) a
            # blocking send would hang the cancellation or close() that sends it, and a
            # server we cannot reach holds no request of ours to stop anyway.
            with contextlib.suppress(zmq.Again):
                await self._sock.send(frame, flags=zmq.NOBLOCK)
            return
        await self._sock.send(frame)

    async def _receive_loop(self) -> None:
        assert self._sock is not None
        try:
            while True:
                frames = await self._sock.recv_multipart()
                try:
                    reply = self._codec.decode(frames[-1]).message
                except ProtocolError as exc:
                    _log.warning("client.bad_frame", error=str(exc))
                    continue
                if not isinstance(reply, ClientDelta | ClientDone | ClientError):
                    _log.warning("client.unexpected_message", type=type(reply).__name__)
                    continue
                queue = self._routes.get(reply.request_id)
                if queue is not None:
                    queue.put_nowait(reply)
                elif isinstance(reply, ClientError) and not reply.request_id:
                    # Not tied to a request: this client sent a frame the server could not read.
                    _log.warning("client.server_rejected_frame", message=reply.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # e.g. the context was terminated under us
            _log.exception("client.receive_failed")
            self._fail_all(f"the client's receive loop failed: {exc}")

    def _on_handshake(self, refused: bool) -> None:
        """CurveZMQ handshake outcome: a refusal fails what waits, and what comes next."""
        self._auth_failed = "the server refused this client's CurveZMQ key" if refused else None
        if refused:
            self._fail_all(self._auth_failed or "", 401)

    def _fail_all(self, message: str, status: int = 0) -> None:
        """Wake every waiting stream with an error instead of leaving it hanging."""
        for queue in self._routes.values():
            queue.put_nowait(FastServeError(status, message))
