"""SIGTERM's drain in the frontend actor: new requests get 503 and /health says draining,
in-flight ones finish, then the loop stops; past the drain timeout, what is left fails."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from fastserve.actors.frontend import FrontendActor
from fastserve.runtime.frontend.options import FrontendOptions
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.transport import MemoryInbox
from tests.fake_scheduler import EchoScheduler
from tests.server_harness import free_port, stream_usage

pytestmark = pytest.mark.timeout(60)


async def start_actor(tok, drain_timeout_s: float):
    fake = EchoScheduler(tok)
    fake.interval = 0.01  # 100 tokens take a second: long enough to drain visibly
    options = FrontendOptions(drain_timeout_s=drain_timeout_s)
    service = FrontendService(fake.send, tokenizer=tok, served_model_name="tiny", options=options)
    fake.service = service
    actor = FrontendActor(MemoryInbox(), service, "127.0.0.1", free_port())
    await actor.start()
    loop_task = asyncio.create_task(actor.run())
    return actor, loop_task, fake, f"http://127.0.0.1:{actor.port}"


async def test_drain_finishes_in_flight_requests_and_refuses_new_ones(tok):
    actor, loop_task, fake, url = await start_actor(tok, drain_timeout_s=30)
    async with aiohttp.ClientSession() as session:
        running = asyncio.create_task(stream_usage(session, url, {"prompt": "HANG", "max_tokens": 100}))
        while not fake.submitted:
            await asyncio.sleep(0.01)
        actor.terminate()  # what SIGTERM calls in the frontend process
        async with session.get(url + "/health") as resp:
            assert resp.status == 503 and (await resp.json()) == {"status": "draining"}
        async with session.post(url + "/v1/completions", json={"prompt": "x"}) as resp:
            assert resp.status == 503
            error = (await resp.json())["error"]
            assert error["type"] == "service_unavailable" and "shutting down" in error["message"]
        async with session.ws_connect(url + "/v1/ws") as ws:
            await ws.send_json({"id": 1, "type": "chat", "body": {"messages": []}})
            assert (await ws.receive_json(timeout=5))["status"] == 503
        assert not loop_task.done()  # still draining: the request has not finished
        tokens, finish, errors = await asyncio.wait_for(running, 10)
    assert (tokens, finish, errors) == (100, "length", [])
    await asyncio.wait_for(loop_task, 5)  # the loop ended on its own once idle
    await actor.stop()
    assert len(fake.submitted) == 1 and fake.aborts == []


async def test_drain_timeout_fails_what_is_left(tok):
    actor, loop_task, fake, url = await start_actor(tok, drain_timeout_s=0.3)
    async with aiohttp.ClientSession() as session:
        running = asyncio.create_task(stream_usage(session, url, {"prompt": "HANG", "max_tokens": 250}))
        while not fake.submitted:
            await asyncio.sleep(0.01)
        actor.terminate()
        await asyncio.wait_for(loop_task, 5)  # after the timeout, not after 2.5 s of tokens
        await actor.stop()
        tokens, finish, errors = await asyncio.wait_for(running, 10)
    assert tokens < 250 and errors and "shutting down" in errors[0]["message"]


async def test_a_second_terminate_stops_at_once(tok):
    actor, loop_task, fake, url = await start_actor(tok, drain_timeout_s=30)
    async with aiohttp.ClientSession() as session:
        running = asyncio.create_task(stream_usage(session, url, {"prompt": "HANG", "max_tokens": 250}))
        while not fake.submitted:
            await asyncio.sleep(0.01)
        actor.terminate()
        actor.terminate()
        await asyncio.wait_for(loop_task, 2)
        await actor.stop()
        _, _, errors = await asyncio.wait_for(running, 10)
    assert errors
