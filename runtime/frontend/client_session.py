"""Many requests of one client connection multiplexed over one stream of frames.

The websocket (`websocket.py`) and the ZeroMQ client endpoint (`zmq_endpoint.py`) share
everything but the wire: request ids chosen by the client, refusing an id that is still
running, submitting through the FrontendService, pumping each request's events to the
client, aborting on request and when the client goes away, and turning failures into
error frames. `ClientSession` is that logic; each endpoint is an adapter that decodes its
frames into `submit` / `abort` calls and formats events through a `ClientWire`.

A send that finds the client gone raises ConnectionResetError (aiohttp's websocket does;
the ZeroMQ router raises its subclass PeerGone): the request's stream stops and the request
is aborted, and a reply that needs no follow-up (an error) is simply not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

import structlog

from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.events import Delta, Failed, Finished, Usage
from fastserve.runtime.frontend.service import FrontendService, RequestHandle

K = TypeVar("K", bound=Hashable)  # how the session names a request (client id, identity + id)
K_contra = TypeVar("K_contra", contravariant=True)
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure


class ClientWire(Protocol[K_contra]):
    """How one endpoint says each outcome to its client (frame formats differ)."""

    async def delta(
        self, key: K_contra, text: str, token_ids: list[int], logprobs: list[float] | None
    ) -> None:
        """New output; `logprobs` is None when the request did not ask for them."""

    async def done(self, key: K_contra, finish_reason: str, usage: Usage) -> None:
        """The request ended normally."""

    async def rejected(self, key: K_contra, exc: RequestError) -> None:
        """The request was refused before it ran (4xx, 429, 503)."""

    async def failed(self, key: K_contra, message: str) -> None:
        """The request failed inside the server (500)."""


class ClientSession(Generic[K]):
    """The running requests of one endpoint's clients, keyed by `K`."""

    def __init__(self, service: FrontendService, wire: ClientWire[K], name: str) -> None:
        self._service = service
        self._wire = wire
        self._name = name  # prefix of this endpoint's log events ("ws", "zmq_endpoint")
        self._handles: dict[K, RequestHandle] = {}
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def num_running(self) -> int:
        """Requests of this session that have not ended yet."""
        return len(self._handles)

    async def submit(self, key: K, kind: str, read_body: Callable[[], object]) -> None:
        """Start request `key` of `kind` ("completion" or "chat"), or answer why not.

        `read_body` returns the request's JSON body (or raises RequestError); it is called
        only once the id is known to be free, so a duplicate is refused before its body
        counts as a request."""
        try:
            if key in self._handles:
                raise RequestError(f"request `{_client_id(key)}` is already running", param="id")
            parsed = self._service.parse(kind, read_body(), choices=False)
            handle = await self._service.submit(parsed)
        except RequestError as exc:
            await self.reply(self._wire.rejected(key, exc))
            return
        except Exception as exc:
            _log.exception(f"{self._name}.submit_failed")
            self._service.metrics.count_internal_error()
            await self.reply(self._wire.failed(key, f"internal error: {exc}"))
            return
        self._handles[key] = handle
        task = asyncio.create_task(self._pump(key, handle))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)

    async def abort(self, key: K) -> None:
        handle = self._handles.get(key)
        if handle is not None:  # an abort racing the request's end is harmless
            await handle.cancel()

    async def reply(self, sending: Awaitable[None]) -> None:
        """Send a frame that needs no follow-up: a gone client just does not get it."""
        with contextlib.suppress(ConnectionResetError):
            await sending

    async def close(self, drain_s: float = 0.0) -> None:
        """Abort every unfinished request, after `drain_s` seconds in which streams that
        already got their terminal event (e.g. FrontendActor's fail_all) may send it."""
        if drain_s > 0 and self._pumps:
            await asyncio.wait(set(self._pumps), timeout=drain_s)
        handles = list(self._handles.values())
        for task in list(self._pumps):
            task.cancel()
        for handle in handles:  # a pump cancelled before it started never cancels its own
            await handle.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _pump(self, key: K, handle: RequestHandle) -> None:
        """Forward one request's events to its client until the request ends."""
        want_logprobs = handle.parsed.logprobs is not None
        try:
            if handle.parsed.echo_text:
                await self._wire.delta(key, handle.parsed.echo_text, [], None)
            async for event in handle:
                if isinstance(event, Delta):
                    logprobs = event.logprobs if want_logprobs else None
                    await self._wire.delta(key, event.text, event.token_ids, logprobs)
                elif isinstance(event, Finished):
                    await self._wire.done(key, event.finish_reason, event.usage)
                elif isinstance(event, Failed):
                    await self._wire.failed(key, event.message)
        except ConnectionResetError:
            _log.info(f"{self._name}.client_gone", request=str(_client_id(key)))
        finally:
            self._handles.pop(key, None)
            await handle.cancel()  # no-op unless the request still runs



def _client_id(key: Hashable) -> object:
    """The client's own request id: the last part of a (connection, id) key."""
    return key[-1] if isinstance(key, tuple) else key
