"""Websocket multiplexing and the official `openai` client, against a fake scheduler."""

from __future__ import annotations

import asyncio

import openai
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from fastserve.runtime.frontend.service import FrontendService
from tests.fake_scheduler import EchoScheduler, reply_for, wait_for


@pytest.fixture
async def env(tok):
    fake = EchoScheduler(tok)
    service = FrontendService(
        fake.send, tokenizer=tok, served_model_name="tiny", default_max_tokens=64
    )
    fake.service = service
    async with TestClient(TestServer(service.build_app())) as client:
        yield client, fake, service


async def receive_until_done(ws, ids: set) -> list[dict]:
    frames, open_ids = [], set(ids)
    while open_ids:
        frame = await asyncio.wait_for(ws.receive_json(), 5)
        frames.append(frame)
        if frame["type"] in ("done", "error"):
            open_ids.discard(frame["id"])
    return frames


async def test_websocket_multiplexes_three_requests(env, tok):
    client, _, _ = env
    prompts = {"a": "alpha one", 2: "beta two", "c": "gamma three"}
    async with client.ws_connect("/v1/ws") as ws:
        for cid, prompt in prompts.items():
            await ws.send_json({"id": cid, "type": "completion", "body": {"prompt": prompt}})
        frames = await receive_until_done(ws, set(prompts))
    for cid, prompt in prompts.items():
        mine = [f for f in frames if f["id"] == cid]
        deltas, done = mine[:-1], mine[-1]
        assert all(f["type"] == "delta" for f in deltas) and done["type"] == "done"
        assert "".join(f["text"] for f in deltas) == reply_for(prompt)
        n = len(tok.encode(reply_for(prompt)))
        assert sum(len(f["token_ids"]) for f in deltas) == n
        assert done["finish_reason"] == "stop" and done["usage"]["completion_tokens"] == n
    # The three streams really interleave on the one socket.
    order = [f["id"] for f in frames]
    assert order.index("c") < max(i for i, x in enumerate(order) if x == "a")


async def test_websocket_abort_errors_and_chat(env):
    client, fake, _ = env
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(
            {"id": "h", "type": "completion", "body": {"prompt": "HANG", "max_tokens": 200}}
        )
        await ws.send_json({"id": "h", "type": "completion", "body": {"prompt": "again"}})
        await ws.send_json({"id": "bad", "type": "chat", "body": {"messages": [], "max_tokens": 2}})
        await ws.send_json(
            {"id": "ch", "type": "chat", "body": {"messages": [{"role": "user", "content": "hi"}]}}
        )
        await ws.send_str("{oops")
        first = await asyncio.wait_for(ws.receive_json(), 5)
        await ws.send_json({"id": "h", "type": "abort"})
        frames = [first, *await receive_until_done(ws, {"h", "bad", "ch", None})]
    ends = {f["id"]: f for f in frames if f["type"] in ("done", "error")}
    assert (
        ends["bad"]["type"] == "error"
        and "`messages` must be a non-empty" in ends["bad"]["error"]["message"]
    )
    assert ends[None]["status"] == 400 and "not valid JSON" in ends[None]["error"]["message"]
    assert ends["ch"]["finish_reason"] == "stop"
    assert ends["h"]["finish_reason"] == "abort"
    dup = [f for f in frames if f["id"] == "h" and f["type"] == "error"]
    assert "already running" in dup[0]["error"]["message"]
    assert [a.reason for a in fake.aborts] == ["abort"]


async def test_closing_the_websocket_aborts_its_requests(env):
    client, fake, service = env
    ws = await client.ws_connect("/v1/ws")
    for cid in ("x", "y"):
        await ws.send_json(
            {"id": cid, "type": "completion", "body": {"prompt": "HANG", "max_tokens": 250}}
        )
    assert (await ws.receive()).type == WSMsgType.TEXT
    await ws.close()
    for _ in range(300):
        if len(fake.aborts) == 2:
            break
        await asyncio.sleep(0.01)
    assert sorted(a.request_id for a in fake.aborts) == sorted(s.request_id for s in fake.submitted)
    assert {a.reason for a in fake.aborts} == {"abort"} and service.num_running == 0


@pytest.fixture
async def oai(env):
    client, _, _ = env
    api = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    yield api
    await api.close()


async def test_openai_client_chat(oai):
    messages = [{"role": "user", "content": "hi"}]
    resp = await oai.chat.completions.create(model="tiny", messages=messages, max_tokens=50)
    text = resp.choices[0].message.content
    assert text.endswith("] héllo 🙂") and resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens > 0
    stream = await oai.chat.completions.create(
        model="tiny", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.total_tokens == resp.usage.total_tokens


async def test_openai_client_completions(oai):
    resp = await oai.completions.create(model="tiny", prompt="The end", max_tokens=3)
    assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 3
    stream = await oai.completions.create(model="tiny", prompt="The end", stream=True)
    texts = [c.choices[0].text async for c in stream]
    assert "".join(texts) == reply_for("The end")


async def test_openai_client_errors(oai):
    with pytest.raises(openai.NotFoundError, match="The model `gpt-x` does not exist."):
        await oai.completions.create(model="gpt-x", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256 tokens"):
        await oai.completions.create(model="tiny", prompt="hi", max_tokens=1000)


async def test_fail_all_ends_running_requests_with_an_error(env):
    client, _, service = env
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json(
            {"id": 1, "type": "completion", "body": {"prompt": "HANG", "max_tokens": 250}}
        )
        assert (await ws.receive_json())["type"] == "delta"
        await service.fail_all("scheduler lost")
        frames = await receive_until_done(ws, {1})
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["message"] == "scheduler lost"
    assert service.num_running == 0 and service.metrics.failed == 1


async def test_n_fans_out_into_sibling_jobs_with_seeds_plus_i(env):
    client, fake, service = env
    body = {"prompt": "alpha one", "n": 3, "seed": 2**63 - 2, "max_tokens": 4}
    resp = await client.post("/v1/completions", json=body)
    data = await resp.json()
    assert resp.status == 200 and [c["index"] for c in data["choices"]] == [0, 1, 2]
    subs = fake.submitted[-3:]
    base = data["id"].removeprefix("cmpl-")
    assert [s.request_id for s in subs] == [f"{base}.{i}" for i in range(3)]
    # seed + i, wrapped to 64 bits: every sibling's seed still fits the wire.
    assert [s.sampling.seed for s in subs] == [2**63 - 2, 2**63 - 1, -(2**63)]
    assert data["usage"]["prompt_tokens"] == len(subs[0].prompt_ids)
    assert data["usage"]["completion_tokens"] == 12
    assert service.num_running == 0


async def test_a_failed_choice_fails_the_request_and_stops_its_siblings(env):
    client, fake, service = env
    resp = await client.post("/v1/completions", json={"prompt": "FAIL", "n": 2, "max_tokens": 50})
    assert resp.status == 500 and "worker exploded" in (await resp.json())["error"]["message"]
    await wait_for(lambda: service.num_running == 0)


async def test_websocket_refuses_several_choices(env):
    client, fake, _ = env
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"id": "a", "type": "completion", "body": {"prompt": "x", "n": 2}})
        frame = await asyncio.wait_for(ws.receive_json(), 5)
    assert frame["type"] == "error" and frame["status"] == 400
    assert "served over HTTP" in frame["error"]["message"]
