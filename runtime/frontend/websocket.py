"""GET /v1/ws: many concurrent requests multiplexed on one websocket.

Client -> server: {"id", "type": "completion"|"chat", "body": {...}} or {"id", "type": "abort"}.
Server -> client: {"id", "type": "delta", "text", "token_ids"[, "logprobs"]} ...
then {"id", "type": "done", "finish_reason", "usage"} or {"id", "type": "error", "error"}.
Closing the socket aborts every unfinished request of the connection.

When the server has API keys, a connection without an `Authorization: Bearer KEY` header
must send {"type": "auth", "api_key": KEY} first (browsers cannot set websocket headers);
the server answers {"type": "auth", "status": "ok"}, or an error with status 401 and
closes the socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from fastserve.runtime.frontend.app import API_KEYS, MAX_BODY_BYTES, SERVICE_KEY
from fastserve.runtime.frontend.auth import ApiKeys, auth_error_body, unauthorized
from fastserve.runtime.frontend.client_session import ClientSession
from fastserve.runtime.frontend.errors import RequestError, server_error_body
from fastserve.runtime.frontend.events import Usage
from fastserve.runtime.frontend.json_body import load_json
from fastserve.runtime.frontend.service import FrontendService

ClientId = str | int
# An unauthenticated socket holds a connection: it gets this long to send its key.
AUTH_TIMEOUT_S = 10.0


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    keys = request.app[API_KEYS]
    header = request.headers.get("Authorization")
    if keys.enabled and header is not None and not keys.valid_header(header):
        return unauthorized(request)  # a plain HTTP 401, before the upgrade
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY_BYTES)
    await ws.prepare(request)
    session = WebSocketSession(ws, request.app[SERVICE_KEY])
    try:
        if keys.enabled and header is None and not await _auth_message(ws, session, keys):
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"unauthorized")
            return ws
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await session.send_error(None, RequestError("send JSON text frames, not binary"))
    finally:
        await session.close()
    return ws


async def _auth_message(
    ws: web.WebSocketResponse, session: WebSocketSession, keys: ApiKeys
) -> bool:
    """The first message must be {"type": "auth", "api_key": KEY} with a valid key."""
    try:
        msg = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT_S)
    except TimeoutError:
        msg = None
    frame: Any = None
    if msg is not None and msg.type == WSMsgType.TEXT:
        try:
            frame = load_json(msg.data)
        except RequestError:
            frame = None
    given = None
    if isinstance(frame, dict) and frame.get("type") == "auth":
        given = frame.get("api_key") if isinstance(frame.get("api_key"), str) else ""
    if given is not None and keys.valid(given):
        await session.send({"type": "auth", "status": "ok"})
        return True
    cid = frame.get("id") if isinstance(frame, dict) else None
    cid = cid if isinstance(cid, str | int) and not isinstance(cid, bool) else None
    body = auth_error_body(given is not None)
    await session.send({"id": cid, "type": "error", "status": 401, **body})
    return False


class WebSocketSession:
    """One websocket connection: JSON text frames in, `ClientSession` calls out."""

    def __init__(self, ws: web.WebSocketResponse, service: FrontendService) -> None:
        self._ws = ws
        self._requests: ClientSession[ClientId] = ClientSession(service, self, "ws")
        # Requests stream concurrently; one lock keeps their frames from interleaving.
        self._lock = asyncio.Lock()
        # Message types other than these are request kinds ("completion", "chat", ...).
        self._handlers: dict[str, Callable[[ClientId, dict[str, Any]], Awaitable[None]]] = {
            "auth": self._on_auth,
            "abort": self._on_abort,
        }

    async def on_text(self, data: str) -> None:
        try:
            msg = load_json(data, "the message is not valid JSON")
        except RequestError as exc:
            await self.send_error(None, exc)
            return
        if not isinstance(msg, dict):
            await self.send_error(None, RequestError("a message must be a JSON object"))
            return
        cid = msg.get("id")
        if isinstance(cid, bool) or not isinstance(cid, str | int):
            await self.send_error(
                None, RequestError("`id` must be a string or an integer", param="id")
            )
            return
        kind = msg.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        await (handler or self._on_request)(cid, msg)

    async def _on_auth(self, cid: ClientId, msg: dict[str, Any]) -> None:
        # Already authenticated (header or first message), or keys are off.
        await self.send({"id": cid, "type": "auth", "status": "ok"})

    async def _on_abort(self, cid: ClientId, msg: dict[str, Any]) -> None:
        await self._requests.abort(cid)

    async def _on_request(self, cid: ClientId, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        await self._requests.submit(
            cid, kind if isinstance(kind, str) else "", lambda: msg.get("body")
        )

    # -- ClientWire: the frames of a request's outcome ------------------------------------

    async def delta(
        self, key: ClientId, text: str, token_ids: list[int], logprobs: list[float] | None
    ) -> None:
        frame: dict[str, Any] = {"id": key, "type": "delta", "text": text, "token_ids": token_ids}
        if logprobs is not None:
            frame["logprobs"] = logprobs
        await self.send(frame)

    async def done(self, key: ClientId, finish_reason: str, usage: Usage) -> None:
        await self.send(
            {"id": key, "type": "done", "finish_reason": finish_reason, "usage": usage.to_dict()}
        )

    async def rejected(self, key: ClientId, exc: RequestError) -> None:
        await self.send_error(key, exc)

    async def failed(self, key: ClientId, message: str) -> None:
        await self.send({"id": key, "type": "error", **server_error_body(message)})

    async def send_error(self, cid: ClientId | None, exc: RequestError) -> None:
        frame = {"id": cid, "type": "error", "status": exc.status, **exc.body()}
        if exc.retry_after is not None:
            frame["retry_after"] = exc.retry_after
        await self.send(frame)

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._lock:
            if not self._ws.closed:
                await self._ws.send_str(json.dumps(frame, ensure_ascii=False))

    async def close(self) -> None:
        """The socket closed: abort every unfinished request of this connection."""
        await self._requests.close()
