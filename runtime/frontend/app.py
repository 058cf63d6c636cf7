"""The aiohttp application: routes, the service handle, and error-to-JSON middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from fastserve.runtime.frontend.errors import RequestError, server_error_body

if TYPE_CHECKING:
    from fastserve.runtime.frontend.service import FrontendService

SERVICE_KEY: web.AppKey[FrontendService] = web.AppKey("fastserve_frontend_service")
# Token-id prompts of long contexts are large JSON documents; aiohttp's default is 1 MiB.
MAX_BODY_BYTES = 64 * 1024 * 1024
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in the OpenAI error shape, whichever handler raised it."""
    try:
        return await handler(request)
    except RequestError as exc:
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPException:
        raise
    except Exception as exc:
        _log.exception("frontend.handler_failed", path=request.path)
        return web.json_response(server_error_body(f"internal error: {exc}"), status=500)


def build_app(service: FrontendService) -> web.Application:
    from fastserve.runtime.frontend import http_openai, websocket

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_error_middleware])
    app[SERVICE_KEY] = service
    app.router.add_post("/v1/completions", http_openai.completions)
    app.router.add_post("/v1/chat/completions", http_openai.chat_completions)
    app.router.add_get("/v1/models", http_openai.models)
    app.router.add_get("/health", http_openai.health)
    app.router.add_get("/metrics", http_openai.metrics)
    app.router.add_get("/v1/ws", websocket.handle_websocket)
    return app
