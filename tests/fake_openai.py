"""A stand-in OpenAI-compatible server for the load generator's tests: the routes `replay`
reads besides the completions a test defines (the served model, the metrics it diffs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Completions = Callable[[web.Request], Awaitable[web.StreamResponse]]


def fake_openai_app(completions: Completions) -> web.Application:
    """`completions` serves POST /v1/completions; /v1/models names one model "fake" and
    /metrics reports an idle scheduler."""

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "fake"}]})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="fastserve_scheduler_jobs 0\n")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/completions", completions)
    return app
