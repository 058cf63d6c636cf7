"""The aiohttp application: routes, the service handle, and error-to-JSON middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from fastserve.runtime.frontend.auth import ApiKeys, auth_middleware
from fastserve.runtime.frontend.errors import RequestError, error_body, server_error_body

if TYPE_CHECKING:
    from fastserve.runtime.frontend.service import FrontendService

SERVICE_KEY: web.AppKey[FrontendService] = web.AppKey("fastserve_frontend_service")
API_KEYS: web.AppKey[ApiKeys] = web.AppKey("fastserve_api_keys")
# Token-id prompts of long contexts are large JSON documents: 1M token ids of up to 7
# characters each fit in 8 MiB. Twice that leaves room for chat markup while bounding what
# one request makes the frontend parse (a JSON array of ints costs ~10x its size in memory).
MAX_BODY_BYTES = 16 * 1024 * 1024
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Headers of aiohttp's own error responses that must not be copied onto a JSON body.
_BODY_HEADERS = frozenset({"Content-Type", "Content-Length"})


def request_error_response(exc: RequestError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in the OpenAI error shape, whichever handler raised it."""
    try:
        return await handler(request)
    except RequestError as exc:
        return request_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        # aiohttp's own 404/405/413...: same shape as ours, its headers (e.g. Allow) kept.
        headers = {k: v for k, v in exc.headers.items() if k not in _BODY_HEADERS}
        code = "not_found" if exc.status == 404 else None
        body = error_body(f"{exc.reason}: {request.method} {request.path}", code=code)
        return web.json_response(body, status=exc.status, headers=headers)
    except Exception as exc:
        _log.exception("frontend.handler_failed", path=request.path)
        request.app[SERVICE_KEY].metrics.count_internal_error()
        return web.json_response(server_error_body(f"internal error: {exc}"), status=500)


def build_app(service: FrontendService) -> web.Application:
    from fastserve.runtime.frontend import dashboard, http_openai, openapi, websocket

    keys = ApiKeys(service.options.api_keys)
    middlewares = [_error_middleware, auth_middleware(keys, service.options.metrics_public)]
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[SERVICE_KEY] = service
    app[API_KEYS] = keys
    app[dashboard.HISTORY_KEY] = dashboard.DashboardHistory(service)
    app.cleanup_ctx.append(dashboard.sample_forever)
    app.router.add_post("/v1/completions", http_openai.completions)
    app.router.add_post("/v1/chat/completions", http_openai.chat_completions)
    app.router.add_get("/v1/models", http_openai.models)
    app.router.add_get("/health", http_openai.health)
    app.router.add_get("/metrics", http_openai.metrics)
    app.router.add_get("/dashboard", dashboard.dashboard_page)
    app.router.add_get("/dashboard/data", dashboard.dashboard_data)
    app.router.add_get("/openapi.json", openapi.handle_openapi)
    app.router.add_get("/v1/ws", websocket.handle_websocket)
    return app
