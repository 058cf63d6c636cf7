"""The HTTP frontend in-process, against a fake scheduler defined here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastserve.protocol.to_frontend import RequestOutput
from fastserve.protocol.to_scheduler import AbortRequest, SubmitRequest
from fastserve.runtime.frontend.detokenizer import REPLACEMENT_CHAR
from fastserve.runtime.frontend.service import FrontendService
from tests.fake_scheduler import FakeScheduler, wait_for

REPLY = "Hello wörld 🙂! The end STOP more text."


class ReplyScheduler(FakeScheduler):
    """Answers each SubmitRequest with REPLY's tokens, two per OutputBatch, then "stop".

    Prompt keywords change its behaviour: HANG streams forever (until aborted), FAIL_EARLY
    fails before any token, FAIL_LATE fails after a few tokens.
    """

    def outputs(self, req: SubmitRequest, prompt: str) -> Iterator[RequestOutput]:
        rid, reply = req.request_id, self.tok.encode(REPLY)
        done = 0
        while True:
            if "FAIL_EARLY" in prompt or ("FAIL_LATE" in prompt and done >= 4):
                yield RequestOutput(rid, [], finish_reason="error", error="worker exploded")
                return
            ids = reply[:1] if "HANG" in prompt else reply[done : done + 2]
            ids = ids[: req.sampling.max_tokens - done]
            done += len(ids)
            finish = None
            if done >= req.sampling.max_tokens:
                finish = "length"
            elif "HANG" not in prompt and done >= len(reply):
                finish = "stop"
            logprobs = [-0.25] * len(ids) if req.sampling.logprobs else []
            yield RequestOutput(rid, ids, logprobs, finish)


@pytest.fixture
async def env(tok):
    fake = ReplyScheduler(tok)
    service = FrontendService(
        fake.send, tokenizer=tok, served_model_name="tiny", default_max_tokens=64
    )
    fake.service = service
    async with TestClient(TestServer(service.build_app())) as client:
        yield client, fake, service


def sse_payloads(raw: str) -> list:
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e[6:] == "[DONE]" else json.loads(e[6:]) for e in events]


async def test_completion_non_streaming(env, tok):
    client, fake, _ = env
    resp = await client.post(
        "/v1/completions", json={"model": "tiny", "prompt": "Say hi", "max_tokens": 100}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == REPLY and body["choices"][0]["finish_reason"] == "stop"
    n_reply, n_prompt = len(tok.encode(REPLY)), len(tok.encode("Say hi"))
    assert body["usage"] == {
        "prompt_tokens": n_prompt,
        "completion_tokens": n_reply,
        "total_tokens": n_prompt + n_reply,
    }
    (submit,) = fake.submitted
    assert submit.prompt_ids == tok.encode("Say hi") and submit.sampling.max_tokens == 100


async def test_chat_non_streaming_length(env, tok):
    client, _, _ = env
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    data = await (await client.post("/v1/chat/completions", json=body)).json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {
        "role": "assistant",
        "content": tok.decode(tok.encode(REPLY)[:4]),
    }
    assert (
        data["choices"][0]["finish_reason"] == "length" and data["usage"]["completion_tokens"] == 4
    )


async def test_completion_streaming(env):
    client, _, _ = env
    resp = await client.post("/v1/completions", json={"prompt": "Say hi", "stream": True})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    texts = [c["choices"][0]["text"] for c in chunks]
    assert "".join(texts) == REPLY and all(REPLACEMENT_CHAR not in t for t in texts)
    assert len([t for t in texts if t]) > 3  # really streamed, in pieces
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


async def test_chat_streaming_with_usage(env):
    client, _, _ = env
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    payloads = sse_payloads(await (await client.post("/v1/chat/completions", json=body)).text())
    assert payloads[-1] == "[DONE]"
    first, *middle, last, usage = payloads[:-1]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"]["content"] for c in middle) == REPLY
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_string_aborts_the_scheduler_request(env, stream):
    client, fake, _ = env
    resp = await client.post(
        "/v1/completions", json={"prompt": "x", "stop": ["STOP"], "stream": stream}
    )
    if stream:
        chunks = sse_payloads(await resp.text())[:-1]
        text, finish = (
            "".join(c["choices"][0]["text"] for c in chunks),
            chunks[-1]["choices"][0]["finish_reason"],
        )
    else:
        choice = (await resp.json())["choices"][0]
        text, finish = choice["text"], choice["finish_reason"]
    assert (text, finish) == ("Hello wörld 🙂! The end ", "stop")
    assert fake.aborts == [AbortRequest(fake.submitted[0].request_id, reason="stop")]


@pytest.mark.parametrize("stream", [False, True])
async def test_error_before_first_token_is_http_500(env, stream):
    client, _, service = env
    resp = await client.post("/v1/completions", json={"prompt": "FAIL_EARLY", "stream": stream})
    assert resp.status == 500
    assert (await resp.json())["error"]["message"] == "worker exploded"
    assert service.metrics.failed == 1


async def test_error_mid_stream_is_an_sse_error_then_done(env):
    client, _, _ = env
    resp = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "FAIL_LATE"}], "stream": True},
    )
    assert resp.status == 200
    payloads = sse_payloads(await resp.text())
    assert payloads[-1] == "[DONE]"
    assert (
        payloads[-2]["error"]["message"] == "worker exploded"
        and payloads[-2]["error"]["type"] == "server_error"
    )


async def test_client_disconnect_mid_stream_aborts(env):
    client, fake, service = env
    resp = await client.post(
        "/v1/completions", json={"prompt": "HANG", "stream": True, "max_tokens": 250}
    )
    assert (await resp.content.readline()).startswith(b"data: ")
    resp.close()  # drops the connection
    await wait_for(
        lambda: fake.aborts == [AbortRequest(fake.submitted[0].request_id, reason="abort")]
    )
    assert service.num_running == 0


async def test_client_disconnect_while_waiting_for_a_whole_response_aborts(env):
    client, fake, service = env
    body = {"prompt": "HANG", "max_tokens": 250}
    pending = asyncio.create_task(client.post("/v1/completions", json=body))
    await wait_for(lambda: len(fake.submitted) == 1)
    pending.cancel()  # the client gives up: its connection closes
    await wait_for(
        lambda: fake.aborts == [AbortRequest(fake.submitted[0].request_id, reason="abort")]
    )
    assert service.num_running == 0


async def test_validation_errors_over_http_never_reach_the_scheduler(env):
    client, fake, service = env
    resp = await client.post(
        "/v1/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (
        error["type"] == "invalid_request_error"
        and "could not parse the JSON body" in error["message"]
    )
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    )
    assert (
        resp.status == 404
        and (await resp.json())["error"]["message"] == "The model `nope` does not exist."
    )
    resp = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 10**6})
    assert (
        resp.status == 400
        and "maximum context length is 256 tokens" in (await resp.json())["error"]["message"]
    )
    resp = await client.post("/v1/completions", json={"prompt": "hi", "temperature": "warm"})
    assert (await resp.json())["error"]["param"] == "temperature"
    assert fake.submitted == [] and service.metrics.rejected == 4


async def test_models_health_metrics(env):
    client, _, service = env
    models = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["data"][0][
        "max_model_len"
    ] == 256
    assert (await client.get("/health")).status == 200
    await client.post("/v1/completions", json={"prompt": "hi"})
    text = await (await client.get("/metrics")).text()
    assert "fastserve_frontend_requests_running 0.0" in text
    assert 'fastserve_frontend_requests_finished_total{finish_reason="stop"} 1.0' in text
    assert "fastserve_frontend_job_completion_time_seconds_count 1.0" in text
    assert (
        f"fastserve_frontend_generation_tokens_total {len(service.tokenizer.encode(REPLY))}.0" in text
    )
    service.ready = False
    assert (await client.get("/health")).status == 503
    assert (await client.post("/v1/completions", json={"prompt": "hi"})).status == 503
