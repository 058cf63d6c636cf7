"""The ZeroMQ client endpoint and FastServeClient, against a fake scheduler defined here."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
import zmq
import zmq.asyncio

from fastserve.protocol.client import ClientDelta, ClientError, ClientSubmit
from fastserve.protocol.codec import Codec
from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import AbortRequest, SubmitRequest
from fastserve.runtime.client import FastServeClient, FastServeError
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.zmq_endpoint import ZmqClientEndpoint
from tests.fake_scheduler import EchoScheduler, reply_for, wait_for

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def env(tok, tmp_path):
    fake = EchoScheduler(tok)
    service = FrontendService(
        fake.send, tokenizer=tok, served_model_name="tiny", default_max_tokens=64
    )
    fake.service = service
    endpoint = ZmqClientEndpoint(service, f"ipc://{tmp_path}/client.sock")
    await endpoint.start()
    try:
        yield endpoint, fake, service
    finally:
        await endpoint.stop()


def chat(content: str, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": content}], **extra}


async def test_stream_chat(env):
    endpoint, fake, _ = env
    async with FastServeClient(endpoint.bound_address) as client:
        stream = client.stream("chat", chat("hi there"))
        deltas = [d async for d in stream]
    assert all(isinstance(d, ClientDelta) for d in deltas) and len(deltas) > 3
    expected = reply_for(fake.tok.decode(fake.submitted[0].prompt_ids))
    assert "".join(d.text for d in deltas) == expected
    assert stream.done is not None and stream.done.finish_reason == "stop"
    assert stream.done.completion_tokens == sum(len(d.token_ids) for d in deltas)


async def test_complete(env, tok):
    endpoint, fake, _ = env
    async with FastServeClient(endpoint.bound_address) as client:
        result = await client.complete("completion", {"prompt": "Say hi", "max_tokens": 50})
    reply = tok.encode(reply_for("Say hi"))
    assert (result.text, result.token_ids, result.finish_reason) == (
        reply_for("Say hi"),
        reply,
        "stop",
    )
    assert result.usage.prompt_tokens == len(tok.encode("Say hi"))
    assert result.usage.total_tokens == len(tok.encode("Say hi")) + len(reply)
    (submit,) = fake.submitted
    assert submit.prompt_ids == tok.encode("Say hi") and submit.sampling.max_tokens == 50


async def test_validation_errors_never_reach_the_scheduler(env):
    endpoint, fake, service = env
    async with FastServeClient(endpoint.bound_address) as client:
        with pytest.raises(FastServeError) as err:
            await client.complete("chat", chat("hi", max_tokens=0))
        assert err.value.status == 400 and err.value.type == "invalid_request_error"
        assert "max_tokens" in err.value.message
        with pytest.raises(FastServeError) as err:
            await client.complete("completion", {"prompt": "x", "model": "nope"})
        assert err.value.status == 404
        with pytest.raises(FastServeError) as err:
            await client.complete("embedding", {"input": "x"})
        assert err.value.status == 400
        # The client still works after rejections.
        assert (await client.complete("completion", {"prompt": "ok"})).finish_reason == "stop"
    assert len(fake.submitted) == 1 and service.metrics.rejected == 3


async def test_server_failure_is_a_500(env):
    endpoint, _, _ = env
    async with FastServeClient(endpoint.bound_address) as client:
        with pytest.raises(FastServeError) as err:
            await client.complete("completion", {"prompt": "FAIL"})
    assert err.value.status == 500 and err.value.message == "worker exploded"


async def test_abort_ends_the_stream_and_reaches_the_scheduler(env):
    endpoint, fake, service = env
    async with FastServeClient(endpoint.bound_address) as client:
        stream = client.stream("completion", {"prompt": "HANG", "max_tokens": 200})
        n = 0
        async for _ in stream:
            n += 1
            if n == 3:
                await client.abort(stream.request_id)
        assert stream.done is not None and stream.done.finish_reason == "abort"
    assert fake.aborts == [AbortRequest(fake.submitted[0].request_id, reason="abort")]
    assert service.num_running == 0 and endpoint.num_running == 0


async def test_breaking_out_of_a_stream_aborts(env):
    endpoint, fake, service = env
    async with FastServeClient(endpoint.bound_address) as client:
        async for _ in client.stream("completion", {"prompt": "HANG", "max_tokens": 200}):
            break
        gc.collect()  # the abandoned iterator is finalized (aclose) by the event loop
        await wait_for(lambda: len(fake.aborts) == 1)
        # The same client keeps serving.
        assert (await client.complete("completion", {"prompt": "next"})).finish_reason == "stop"
    assert fake.aborts[0].request_id == fake.submitted[0].request_id
    assert service.num_running == 0


async def test_concurrent_requests_are_demultiplexed(env, tok):
    endpoint, fake, _ = env
    async with FastServeClient(endpoint.bound_address) as client:
        a, b = await asyncio.gather(
            client.complete("completion", {"prompt": "first!"}),
            client.complete("completion", {"prompt": "second", "max_tokens": 5}),
        )
    assert a.text == reply_for("first!") and a.finish_reason == "stop"
    assert b.token_ids == tok.encode(reply_for("second"))[:5] and b.finish_reason == "length"
    assert len(fake.submitted) == 2


async def raw_dealer(ctx: zmq.asyncio.Context, address: str) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    return sock


async def test_garbage_frames_are_rejected_and_the_endpoint_keeps_going(env):
    endpoint, fake, _ = env
    ctx = zmq.asyncio.Context()
    codec = Codec()
    sock = await raw_dealer(ctx, endpoint.bound_address)
    try:
        internal = SubmitRequest("r", [1, 2], SamplingParams(), 0.0)  # valid, not for clients
        for frames in (
            [b"garbage"],
            [b"\x32\x01" + b"\x00" * 8 + b"\xc1"],  # ClientSubmit header, broken msgpack
            [codec.encode(internal)],
            [codec.encode(ClientSubmit("a", "chat", "{}")), b"extra"],
        ):
            await sock.send_multipart(frames)
            error = codec.decode(await asyncio.wait_for(sock.recv(), 3)).message
            assert isinstance(error, ClientError) and (error.request_id, error.status) == ("", 400)
        await sock.send(codec.encode(ClientSubmit("b", "completion", "{not json")))
        error = codec.decode(await asyncio.wait_for(sock.recv(), 3)).message
        assert isinstance(error, ClientError) and (error.request_id, error.status) == ("b", 400)
        assert "could not parse the JSON body" in error.message
    finally:
        sock.close()
        ctx.term()
    async with FastServeClient(endpoint.bound_address) as client:
        assert (await client.complete("completion", {"prompt": "x"})).finish_reason == "stop"
    assert len(fake.submitted) == 1


async def test_vanished_client_has_its_requests_aborted(env):
    endpoint, fake, service = env
    ctx = zmq.asyncio.Context()
    codec = Codec()
    sock = await raw_dealer(ctx, endpoint.bound_address)
    body = json.dumps({"prompt": "HANG", "max_tokens": 200})
    await sock.send(codec.encode(ClientSubmit("gone", "completion", body)))
    await asyncio.wait_for(sock.recv(), 3)  # streaming has started
    sock.close()
    ctx.term()
    # The next delta cannot be routed: the endpoint aborts the request.
    await wait_for(lambda: len(fake.aborts) == 1)
    assert service.num_running == 0 and endpoint.num_running == 0


async def test_duplicate_request_ids(env):
    endpoint, fake, _ = env
    ctx = zmq.asyncio.Context()
    codec = Codec()
    sock = await raw_dealer(ctx, endpoint.bound_address)
    try:
        hang = ClientSubmit("same", "completion", json.dumps({"prompt": "HANG"}))
        await sock.send(codec.encode(hang))
        await sock.send(codec.encode(hang))
        replies = [codec.decode(await asyncio.wait_for(sock.recv(), 3)).message for _ in range(5)]
        errors = [r for r in replies if isinstance(r, ClientError)]
        assert len(errors) == 1 and "already running" in errors[0].message
        assert len(fake.submitted) == 1  # the first one still runs
    finally:
        sock.close()
        ctx.term()
    async with FastServeClient(endpoint.bound_address) as client:
        first = client.stream("completion", {"prompt": "HANG"}, request_id="mine")
        async with first:
            await first.__aiter__().__anext__()
            with pytest.raises(FastServeError) as err:  # caught here: ids are the client's
                async for _ in client.stream("completion", {"prompt": "x"}, request_id="mine"):
                    pass
            assert err.value.status == 0


async def test_server_shutdown_ends_running_streams_with_an_error(env):
    endpoint, _, service = env
    async with FastServeClient(endpoint.bound_address) as client:
        stream = client.stream("completion", {"prompt": "HANG"})
        await stream.__aiter__().__anext__()
        # What FrontendActor.stop does: fail every request, then stop the endpoint.
        await service.fail_all("server is shutting down")
        await endpoint.stop()
        with pytest.raises(FastServeError) as err:
            async for _ in stream:
                pass
    assert err.value.status == 500 and err.value.message == "server is shutting down"
