"""GET /v1/ws: many concurrent requests multiplexed on one websocket.

Client -> server: {"id", "type": "completion"|"chat", "body": {...}} or {"id", "type": "abort"}.
Server -> client: {"id", "type": "delta", "text", "token_ids"[, "logprobs"]} ...
then {"id", "type": "done", "finish_reason", "usage"} or {"id", "type": "error", "error"}.
Closing the socket aborts every unfinished request of the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from fastserve.runtime.frontend.app import MAX_BODY_BYTES, SERVICE_KEY
from fastserve.runtime.frontend.errors import RequestError, server_error_body
from fastserve.runtime.frontend.events import Delta, Failed, Finished
from fastserve.runtime.frontend.service import FrontendService, RequestHandle

ClientId = str | int
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure


async def handle_websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_BODY_BYTES)
    await ws.prepare(request)
    session = WebSocketSession(ws, request.app[SERVICE_KEY])
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await session.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await session.send_error(None, RequestError("send JSON text frames, not binary"))
    finally:
        await session.close()
    return ws


class WebSocketSession:
    def __init__(self, ws: web.WebSocketResponse, service: FrontendService) -> None:
        self._ws = ws
        self._service = service
        self._handles: dict[ClientId, RequestHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Requests stream concurrently; one lock keeps their frames from interleaving.
        self._lock = asyncio.Lock()

    async def on_text(self, data: str) -> None:
        try:
            msg = json.loads(data)
        except ValueError as exc:
            await self.send_error(None, RequestError(f"the message is not valid JSON: {exc}"))
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
        if kind == "abort":
            handle = self._handles.get(cid)
            if handle is not None:  # an abort racing the request's end is harmless
                await handle.cancel()
            return
        if cid in self._handles:
            await self.send_error(
                cid, RequestError(f"request `{cid}` is already running", param="id")
            )
            return
        try:
            parsed = self._service.parse(kind if isinstance(kind, str) else "", msg.get("body"))
            handle = await self._service.submit(parsed)
        except RequestError as exc:
            await self.send_error(cid, exc)
            return
        except Exception as exc:
            _log.exception("ws.submit_failed")
            await self._send(
                {"id": cid, "type": "error", **server_error_body(f"internal error: {exc}")}
            )
            return
        self._handles[cid] = handle
        task = asyncio.create_task(self._pump(cid, handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, cid: ClientId, handle: RequestHandle) -> None:
        want_logprobs = handle.parsed.logprobs is not None
        try:
            if handle.parsed.echo_text:
                await self._send(
                    {"id": cid, "type": "delta", "text": handle.parsed.echo_text, "token_ids": []}
                )
            async for event in handle:
                if isinstance(event, Delta):
                    frame: dict[str, Any] = {
                        "id": cid,
                        "type": "delta",
                        "text": event.text,
                        "token_ids": event.token_ids,
                    }
                    if want_logprobs:
                        frame["logprobs"] = event.logprobs
                    await self._send(frame)
                elif isinstance(event, Finished):
                    usage = event.usage.to_dict()
                    await self._send(
                        {
                            "id": cid,
                            "type": "done",
                            "finish_reason": event.finish_reason,
                            "usage": usage,
                        }
                    )
                elif isinstance(event, Failed):
                    await self._send(
                        {"id": cid, "type": "error", **server_error_body(event.message)}
                    )
        except ConnectionResetError:
            pass  # socket gone: close() aborts what is left
        finally:
            self._handles.pop(cid, None)
            await handle.cancel()

    async def send_error(self, cid: ClientId | None, exc: RequestError) -> None:
        await self._send({"id": cid, "type": "error", "status": exc.status, **exc.body()})

    async def _send(self, frame: dict[str, Any]) -> None:
        async with self._lock:
            if not self._ws.closed:
                await self._ws.send_str(json.dumps(frame, ensure_ascii=False))

    async def close(self) -> None:
        """The socket closed: abort every unfinished request of this connection."""
        handles = list(self._handles.values())
        for task in list(self._tasks):
            task.cancel()
        for handle in handles:
            await handle.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
