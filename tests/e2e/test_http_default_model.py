"""End to end over HTTP with the real default model (SmolLM2-135M-Instruct) in real processes."""

import asyncio
import json
import time

import aiohttp
import openai
import pytest

from tests.server_harness import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    args = ["--num-device-blocks", "512", "--max-batch-jobs", "64"]
    with ServerProcess(args, tmp_path_factory.mktemp("logs"), ready_timeout=400) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


def test_models_lists_the_default_model(client):
    assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct"]


def test_openai_client_chat_says_paris(client):
    resp = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=QUESTION, temperature=0, max_tokens=30
    )
    assert "Paris" in resp.choices[0].message.content
    assert resp.usage.completion_tokens > 0


def test_openai_client_chat_streaming_says_paris(client):
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=QUESTION, temperature=0, max_tokens=30, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "Paris" in text


def test_openai_client_completions_and_errors(client):
    resp = client.completions.create(
        model="SmolLM2-135M-Instruct",
        prompt="The capital of France is",
        temperature=0,
        max_tokens=8,
    )
    assert resp.choices[0].finish_reason in ("length", "stop") and resp.choices[0].text
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="maximum context length is 8192"):
        client.completions.create(model="SmolLM2-135M-Instruct", prompt="hi " * 9000, max_tokens=4)


def test_websocket_streams_many_requests_on_one_connection(server):
    async def scenario():
        async with aiohttp.ClientSession() as s, s.ws_connect(server.url + "/v1/ws") as ws:
            for i in range(3):
                body = {"messages": QUESTION, "temperature": 0, "max_tokens": 20}
                await ws.send_json({"id": f"c{i}", "type": "chat", "body": body})
            texts: dict[str, str] = {}
            done: set[str] = set()
            while len(done) < 3:
                msg = json.loads((await ws.receive(timeout=120)).data)
                if msg["type"] == "delta":
                    texts[msg["id"]] = texts.get(msg["id"], "") + msg["text"]
                elif msg["type"] == "done":
                    done.add(msg["id"])
                else:
                    raise AssertionError(msg)
            return texts

    texts = asyncio.run(scenario())
    assert set(texts) == {"c0", "c1", "c2"} and all("Paris" in t for t in texts.values())


def test_aborting_50_streams_leaves_the_kv_pool_as_full_as_before(server):
    def pool():
        m = server.metrics()
        return m.get("fastserve_scheduler_free_device_blocks"), m.get("fastserve_scheduler_jobs")

    # Wait for earlier tests' requests to drain so the baseline is the idle pool.
    deadline = time.monotonic() + 60
    while pool()[1] not in (0.0, None) and time.monotonic() < deadline:
        time.sleep(0.2)
    before = server.metrics()["fastserve_scheduler_total_device_blocks"]

    async def one(s, i):
        body = {
            "prompt": f"Story number {i}: once upon a time",
            "max_tokens": 400,
            "ignore_eos": True,
            "stream": True,
        }
        async with s.post(server.url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
            chunks = 0
            async for raw in resp.content:
                if raw.startswith(b"data: {"):
                    chunks += 1
                    if chunks >= 3:
                        return chunks  # leaving the block closes the connection mid-stream
        raise AssertionError("stream ended before it was aborted")

    async def scenario():
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*(one(s, i) for i in range(50)))

    assert all(n == 3 for n in asyncio.run(scenario()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        free, jobs = pool()
        if jobs == 0 and free == before:
            break
        time.sleep(0.2)
    assert pool() == (before, 0.0)
    finished = server.metrics()
    assert (
        finished.get('fastserve_frontend_requests_finished_total{finish_reason="abort"}', 0) >= 50
    )
