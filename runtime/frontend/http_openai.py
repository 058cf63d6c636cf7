"""HTTP handlers of the OpenAI-compatible API, plus /health and /metrics."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from fastserve.runtime.frontend.app import SERVICE_KEY
from fastserve.runtime.frontend.errors import RequestError, server_error_body
from fastserve.runtime.frontend.events import Delta, Failed, Finished
from fastserve.runtime.frontend.json_body import load_json
from fastserve.runtime.frontend.responses import SSE_DONE, ResponseFormatter, sse_event
from fastserve.runtime.frontend.service import FrontendService, RequestHandle

# How often a handler checks that its client is still connected. aiohttp does not cancel
# handlers on disconnect, and a request waiting in the scheduler's queues writes nothing
# that could fail, so without this a vanished client's request would run to the end.
DISCONNECT_POLL_S = 0.2
_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "completion")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, "chat")


async def models(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    card = {
        "id": service.limits.model_name,
        "object": "model",
        "created": service.created,
        "owned_by": "fastserve",
        "max_model_len": service.limits.max_model_len,
    }
    return web.json_response({"object": "list", "data": [card]})


async def health(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    # Draining answers 503 so that load balancers stop sending before the server is gone.
    if service.draining:
        return web.json_response({"status": "draining"}, status=503)
    if service.restarting:  # the frontend is up but nothing behind it can serve yet
        return web.json_response({"status": "restarting"}, status=503)
    if not service.ready:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    text = request.app[SERVICE_KEY].metrics_text()
    return web.Response(body=text.encode(), headers={"Content-Type": _PROMETHEUS_TYPE})


async def _serve(request: web.Request, kind: str) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    # Overload and drain refusals come before the body is read: they must stay cheap.
    service.precheck()  # RequestError -> 4xx/5xx by the middleware
    # The body is JSON whatever the Content-Type says (curl -d sends form-urlencoded), and
    # always UTF-8 (RFC 8259): a declared charset is not trusted with decoding it.
    try:
        body = load_json(await request.read())
    except RequestError as exc:
        service.count_rejection(exc)
        raise
    parsed = service.parse(kind, body)
    handle = await service.submit(parsed)
    watcher = asyncio.create_task(_watch_disconnect(request, handle))
    try:
        if parsed.stream:
            return await _stream(request, service, handle)
        return await _whole(service, handle)
    finally:
        watcher.cancel()
        await handle.cancel()  # no-op unless the request is still running


async def _watch_disconnect(request: web.Request, handle: RequestHandle) -> None:
    while True:
        await asyncio.sleep(DISCONNECT_POLL_S)
        transport = request.transport
        if transport is None or transport.is_closing():
            await handle.cancel()
            return


def _formatter(service: FrontendService, handle: RequestHandle) -> ResponseFormatter:
    prefix = "chatcmpl-" if handle.parsed.kind == "chat" else "cmpl-"
    created = int(handle.arrival_wall or time.time())
    return ResponseFormatter(
        handle.parsed, prefix + handle.request_id, created, service.tokenizer.token_text
    )


async def _whole(service: FrontendService, handle: RequestHandle) -> web.Response:
    outputs = {i: Delta("", index=i) for i in range(len(handle.choices))}
    reasons: dict[int, str] = {}
    async for event in handle:
        if isinstance(event, Delta):
            outputs[event.index].extend(event)
        elif isinstance(event, Failed):
            return web.json_response(server_error_body(event.message), status=500)
        elif isinstance(event, Finished):
            reasons[event.index] = event.finish_reason
    if len(reasons) != len(outputs):
        raise RuntimeError("request events ended without a finish")
    ranked = [(outputs[i], reasons[i]) for i in sorted(outputs)]
    if handle.parsed.best_of > handle.parsed.n:
        # best_of: the n candidates of highest cumulative log-probability, best first.
        ranked.sort(key=lambda c: sum(c[0].logprobs), reverse=True)
        ranked = ranked[: handle.parsed.n]
    fmt = _formatter(service, handle)
    return web.json_response(fmt.response(ranked, handle.usage()))


async def _stream(
    request: web.Request, service: FrontendService, handle: RequestHandle
) -> web.StreamResponse:
    fmt = _formatter(service, handle)
    response: web.StreamResponse | None = None
    try:
        async for event in handle:
            if response is None:
                # Headers wait for the first event so that a request failing before its first
                # token still gets a plain HTTP 500 instead of a stream that carries an error.
                if isinstance(event, Failed):
                    return web.json_response(server_error_body(event.message), status=500)
                response = web.StreamResponse(headers=_SSE_HEADERS)
                await response.prepare(request)
            if isinstance(event, Delta):
                chunks = fmt.delta_chunks(event)
            elif isinstance(event, Finished):
                chunks = fmt.closing_chunks(event)
                if handle.done:  # the last choice ended: the usage of them all
                    last = fmt.usage_chunk(handle.usage())
                    chunks += [last] if last is not None else []
            else:
                chunks = [server_error_body(event.message)]
            for chunk in chunks:
                await response.write(sse_event(chunk))
        assert response is not None
        await response.write(SSE_DONE)
        await response.write_eof()
    except ConnectionResetError:
        # The client left mid-stream; the caller's `finally` aborts the request.
        pass
    return response if response is not None else web.Response(status=499)
