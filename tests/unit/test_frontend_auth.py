"""API keys over HTTP and the websocket (header or first message); /health stays open."""

from __future__ import annotations

import hmac

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastserve.runtime.frontend import auth
from fastserve.runtime.frontend.options import FrontendOptions
from fastserve.runtime.frontend.service import FrontendService
from tests.fake_scheduler import EchoScheduler

KEYS = ("sk-first", "sk-second")
BODY = {"prompt": "hi", "max_tokens": 2}


async def make_env(tok, **options):
    fake = EchoScheduler(tok)
    opts = FrontendOptions(api_keys=KEYS, **options)
    service = FrontendService(fake.send, tokenizer=tok, served_model_name="tiny", options=opts)
    fake.service = service
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    return client, fake


@pytest.fixture
async def env(tok):
    client, fake = await make_env(tok)
    yield client, fake
    await client.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_v1_needs_a_valid_bearer_key(env):
    client, fake = env
    resp = await client.post("/v1/completions", json=BODY)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert "didn't provide an API key" in error["message"]
    for header in ({"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic sk-first"}):
        resp = await client.post("/v1/completions", json=BODY, headers=header)
        assert resp.status == 401
    resp = await client.post("/v1/completions", json=BODY, headers=bearer("sk-wrong"))
    assert "Incorrect API key" in (await resp.json())["error"]["message"]
    assert (await client.get("/v1/models")).status == 401
    assert fake.submitted == []  # refused before parsing: nothing reached the scheduler
    for key in KEYS:
        resp = await client.post("/v1/completions", json=BODY, headers=bearer(key))
        assert resp.status == 200
    resp = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": "bearer   sk-second "},  # scheme case, spaces: as OpenAI
    )
    assert resp.status == 200 and len(fake.submitted) == 3


async def test_health_and_openapi_stay_open_metrics_does_not(env):
    client, _ = env
    assert (await client.get("/health")).status == 200
    doc = await (await client.get("/openapi.json")).json()
    assert doc["security"] == [{"bearer": []}]
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=bearer(KEYS[0]))).status == 200


async def test_metrics_public(tok):
    client, _ = await make_env(tok, metrics_public=True)
    try:
        assert (await client.get("/metrics")).status == 200
        assert (await client.post("/v1/completions", json=BODY)).status == 401
    finally:
        await client.close()


async def ws_request(ws) -> list[dict]:
    await ws.send_json({"id": 1, "type": "completion", "body": BODY})
    frames = []
    while not frames or frames[-1]["type"] not in ("done", "error"):
        frames.append(await ws.receive_json(timeout=5))
    return frames


async def test_websocket_key_in_the_header(env):
    client, fake = env
    async with client.ws_connect("/v1/ws", headers=bearer(KEYS[1])) as ws:
        assert (await ws_request(ws))[-1]["type"] == "done"
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await client.ws_connect("/v1/ws", headers=bearer("sk-nope"))
    assert err.value.status == 401
    assert len(fake.submitted) == 1


async def test_websocket_key_in_the_first_message(env):
    client, fake = env
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"type": "auth", "api_key": KEYS[0]})
        assert await ws.receive_json(timeout=5) == {"type": "auth", "status": "ok"}
        assert (await ws_request(ws))[-1]["type"] == "done"
    for first in ({"type": "auth", "api_key": "sk-nope"}, {"id": 7, "type": "completion"}):
        async with client.ws_connect("/v1/ws") as ws:
            await ws.send_json(first)
            error = await ws.receive_json(timeout=5)
            assert error["status"] == 401 and error["error"]["code"] == "invalid_api_key"
            closing = await ws.receive(timeout=5)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
    assert len(fake.submitted) == 1


def test_every_key_is_compared_in_constant_time(monkeypatch):
    calls = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = auth.ApiKeys(["a", "b", "c"])
    assert keys.valid("a") and not keys.valid("d") and not keys.valid(None)
    assert len(calls) == 6  # no early exit on the first match: all three, twice
    assert auth.ApiKeys().valid(None) and not auth.ApiKeys().enabled
