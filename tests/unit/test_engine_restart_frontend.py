"""The frontend's side of self-healing: EngineDown fails every open request at once and
turns /health to "restarting" with 503s for new requests; EngineUp serves again. Also the
supervisor's restart bound and backoff."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from fastserve.actors.frontend import FrontendActor
from fastserve.deploy.healing import RestartPolicy
from fastserve.protocol.codec import Codec
from fastserve.protocol.control import EngineDown, EngineUp
from fastserve.protocol.to_frontend import OutputBatch, RequestOutput
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.transport import MemoryInbox, Outbox
from tests.fake_scheduler import EchoScheduler
from tests.server_harness import free_port, stream_usage

pytestmark = pytest.mark.timeout(60)


class CountingOutbox(Outbox):
    """Counts resets; sending is the fake scheduler's job here."""

    def __init__(self) -> None:
        self.resets = 0

    async def send(self, message: Any) -> None:
        raise AssertionError("not used")

    def reset(self) -> None:
        self.resets += 1


async def test_engine_down_fails_streams_and_engine_up_serves_again(tok):
    fake = EchoScheduler(tok)
    fake.interval = 0.01
    service = FrontendService(fake.send, tokenizer=tok, served_model_name="tiny")
    fake.service = service
    inbox, link = MemoryInbox(), CountingOutbox()
    fake.output_to(inbox)  # its outputs and the supervisor's messages share the actor's inbox
    actor = FrontendActor(inbox, service, "127.0.0.1", free_port(), to_scheduler=link)
    await actor.start()
    loop_task = asyncio.create_task(actor.run())
    url, codec = f"http://127.0.0.1:{actor.port}", Codec()
    try:
        async with aiohttp.ClientSession() as s:
            running = asyncio.create_task(stream_usage(s, url, {"prompt": "HANG", "max_tokens": 250}))
            while not fake.submitted:
                await asyncio.sleep(0.01)
            inbox.deliver(codec.encode(EngineDown(0, "actor worker-0 exited", True)))
            tokens, finish, errors = await asyncio.wait_for(running, 2)
            assert tokens < 250 and errors and "restarting" in errors[0]["message"]
            async with s.get(url + "/health") as resp:
                assert resp.status == 503 and await resp.json() == {"status": "restarting"}
            async with s.post(url + "/v1/completions", json={"prompt": "x"}) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 503 and resp.headers["Retry-After"] == "2"
                assert (error["type"], error["code"]) == ("service_unavailable", "engine_restarting")
            async with s.ws_connect(url + "/v1/ws") as ws:
                await ws.send_json({"id": 1, "type": "chat", "body": {"messages": []}})
                assert (await ws.receive_json(timeout=5))["status"] == 503
            # A dead scheduler's late output for a failed request changes nothing (the
            # fake keeps answering the failed request too: ignored the same way).
            late = RequestOutput(fake.submitted[0].request_id, [5], finish_reason="length")
            inbox.deliver(codec.encode(OutputBatch(9, [late])))
            inbox.deliver(codec.encode(EngineUp(1)))
            for _ in range(200):
                if not service.restarting:
                    break
                await asyncio.sleep(0.01)
            async with s.get(url + "/health") as resp:
                assert resp.status == 200
            assert await stream_usage(s, url, {"prompt": "HANG", "max_tokens": 5}) == (5, "length", [])
            async with s.get(url + "/metrics") as resp:
                text = await resp.text()
    finally:
        actor.request_stop()
        await asyncio.wait_for(loop_task, 5)
        await actor.stop()
    assert link.resets == 2  # on down (drop the backlog) and on up
    assert "fastserve_frontend_engine_restarts_total 1.0" in text
    assert "fastserve_frontend_engine_restarting 0.0" in text
    assert service.metrics.failed == 1 and service.num_running == 0


def test_restart_policy_backs_off_and_is_bounded():
    policy = RestartPolicy(max_restarts=3, window_s=60, backoff_s=0.5, backoff_max_s=1.5)
    assert [policy.next_delay(t) for t in (0, 1, 2)] == [0.5, 1.0, 1.5]
    assert policy.next_delay(3) is None  # a fourth within the minute: give up
    assert policy.next_delay(60.5) == 1.5  # the first one left the window: 2 left, capped
    assert RestartPolicy.from_config(ServerConfig(max_restarts=0)) is None
    assert RestartPolicy.from_config(ServerConfig()) == RestartPolicy(5, 600.0, 0.5, 10.0)
