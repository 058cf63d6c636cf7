"""SIGTERM on the real process tree: /health says draining, new requests get 503, the
in-flight streams run to their last token, then `fastserve serve` exits 0."""

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess

pytestmark = pytest.mark.timeout(240)
MAX_TOKENS = 240


async def stream_tokens(session, url, started: asyncio.Event) -> tuple[int, str | None]:
    """(completion tokens from the usage chunk, finish reason) of one streamed completion."""
    body = {
        "prompt": "hello world",
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tokens, finish = 0, None
    async with session.post(url + "/v1/completions", json=body) as resp:
        assert resp.status == 200
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            started.set()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"]:
                finish = chunk["choices"][0]["finish_reason"] or finish
    return tokens, finish


def test_sigterm_drains_then_exits_zero(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "model")
    # One job per batch: the streams run one after another, so the drain takes a while.
    args = ["--model", str(model), "--block-size", "4", "--num-device-blocks", "512"]
    args += ["--max-model-len", "256", "--max-batch-jobs", "1", "--drain-timeout", "120"]
    with ServerProcess(args, tmp_path) as server:

        async def scenario():
            async with aiohttp.ClientSession() as s:
                started = asyncio.Event()
                streams = [asyncio.create_task(stream_tokens(s, server.url, started))]
                await asyncio.wait_for(started.wait(), 60)
                streams += [asyncio.create_task(stream_tokens(s, server.url, asyncio.Event()))
                            for _ in range(3)]  # fmt: skip
                await asyncio.sleep(0.3)  # accepted before the signal
                server.proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 10
                while True:
                    async with s.get(server.url + "/health") as resp:
                        if resp.status == 503 and (await resp.json())["status"] == "draining":
                            break
                    assert time.monotonic() < deadline, "never reported draining"
                    await asyncio.sleep(0.05)
                async with s.post(server.url + "/v1/completions", json={"prompt": "x"}) as resp:
                    refused = resp.status, (await resp.json())["error"]["type"]
                still_running = sum(not t.done() for t in streams)
                return refused, still_running, await asyncio.wait_for(asyncio.gather(*streams), 120)

        refused, still_running, results = asyncio.run(scenario())
        code = server.proc.wait(60)
    assert refused == (503, "service_unavailable")
    assert still_running > 0  # the drain really overlapped running requests
    assert results == [(MAX_TOKENS, "length")] * 4
    assert code == 0
    events = server.log_events()
    finished = [e for e in events if e.get("event") == "drain.finished"]
    assert finished and finished[0]["complete"] is True
    assert any(e.get("event") == "server_stopped" for e in events)
