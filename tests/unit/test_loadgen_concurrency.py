"""`replay` against a fake streaming server: --max-concurrency bounds the requests in
flight (as vLLM's), and every streamed chunk's gap lands in the ITL sample."""

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from fastserve.benchmarks.loadgen import replay
from fastserve.runtime.sim.metrics import Reservoir
from fastserve.runtime.sim.workload import Request
from tests.fake_openai import fake_openai_app

GAP_S = 0.02  # the fake server's time between two tokens


def fake_server(stats: dict) -> web.Application:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stats["now"] += 1
        stats["peak"] = max(stats["peak"], stats["now"])
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(body["max_tokens"]):
            await asyncio.sleep(GAP_S)
            last = i == body["max_tokens"] - 1
            choice = {"index": 0, "text": "x", "logprobs": {"tokens": ["x"]},
                      "finish_reason": "length" if last else None}  # fmt: skip
            await resp.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        stats["now"] -= 1
        return resp

    return fake_openai_app(completions)


async def test_max_concurrency_bounds_in_flight_requests_and_itl_is_recorded() -> None:
    stats = {"now": 0, "peak": 0}
    server = TestServer(fake_server(stats), host="127.0.0.1")
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}"
        work = [Request(0.0, 4, 5) for _ in range(8)]  # all at once
        itl = Reservoir()
        results, _, elapsed = await replay(
            url, work, max_concurrency=2, warmup=0, progress=False, itl=itl
        )
        assert stats["peak"] == 2 and all(r.ok for r in results)
        # Later requests waited for a slot: they were sent late, their latency starts then.
        assert max(r.arrival for r in results) >= 3 * 5 * GAP_S
        assert elapsed >= 4 * 5 * GAP_S
        assert itl.count == 8 * 4  # 5 chunks per request: 4 gaps
        assert min(itl.values()) >= GAP_S * 0.5 and all(r.max_itl for r in results)
        stats["peak"] = 0
        await replay(url, work, warmup=0, progress=False)  # no bound: all 8 at once
        assert stats["peak"] == 8
    finally:
        await server.close()
