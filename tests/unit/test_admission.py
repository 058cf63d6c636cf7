"""Admission control: past the bounds a fast 429 with Retry-After on every transport;
what was accepted still completes."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastserve.runtime.client import FastServeClient, FastServeError
from fastserve.runtime.frontend.admission import AdmissionControl, ThroughputMeter
from fastserve.runtime.frontend.options import FrontendOptions
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.zmq_endpoint import ZmqClientEndpoint
from fastserve.runtime.sched.cost_model import CostModel
from tests.fake_scheduler import EchoScheduler

pytestmark = pytest.mark.timeout(60)
LONG = {"prompt": "HANG", "max_tokens": 60}  # EchoScheduler: 60 tokens, one per batch


async def make_env(tok, **options):
    fake = EchoScheduler(tok)
    service = FrontendService(
        fake.send, tokenizer=tok, served_model_name="tiny", options=FrontendOptions(**options)
    )
    fake.service = service
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    return client, fake, service


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def completion(client, body) -> tuple[int, dict, dict]:
    resp = await client.post("/v1/completions", json=body)
    return resp.status, dict(resp.headers), await resp.json()


async def test_request_bound_sheds_fast_and_loses_nothing(tok):
    client, fake, service = await make_env(tok, max_queued_requests=3)
    try:
        accepted = [asyncio.create_task(completion(client, LONG)) for _ in range(3)]
        await wait_for(lambda: len(fake.submitted) == 3)
        t0 = time.perf_counter()
        shed = await asyncio.gather(*(completion(client, LONG) for _ in range(20)))
        assert time.perf_counter() - t0 < 2.0  # refused without waiting for any work
        for status, headers, body in shed:
            assert status == 429 and int(headers["Retry-After"]) >= 1
            assert body["error"]["type"] == "rate_limit_error"
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert "--max-queued-requests 3" in body["error"]["message"]
        for status, _, body in await asyncio.gather(*accepted):
            assert status == 200 and body["usage"]["completion_tokens"] == 60
        assert len(fake.submitted) == 3 and fake.aborts == []
        assert service.metrics.shed == 20 and service.num_running == 0
        assert (await completion(client, {"prompt": "x"}))[0] == 200  # room again
        assert "fastserve_frontend_requests_shed_total 20.0" in service.metrics_text()
    finally:
        await client.close()


async def test_token_bound_counts_prompt_plus_max_tokens(tok):
    client, fake, service = await make_env(tok, max_queued_tokens=100)
    try:
        big = asyncio.create_task(completion(client, {"prompt": "HANG", "max_tokens": 150}))
        await wait_for(lambda: len(fake.submitted) == 1)  # alone, larger than the bound: in
        assert service.reserved_tokens == len(fake.submitted[0].prompt_ids) + 150
        status, headers, body = await completion(client, {"prompt": "x", "max_tokens": 5})
        assert status == 429 and "--max-queued-tokens 100" in body["error"]["message"]
        assert (await big)[0] == 200 and service.reserved_tokens == 0
        assert (await completion(client, {"prompt": "x", "max_tokens": 5}))[0] == 200
    finally:
        await client.close()


async def test_websocket_and_zmq_answer_429_too(tok, tmp_path):
    client, fake, service = await make_env(tok, max_queued_requests=1)
    endpoint = ZmqClientEndpoint(service, f"ipc://{tmp_path}/z.sock")
    await endpoint.start()
    try:
        async with client.ws_connect("/v1/ws") as ws:
            await ws.send_json({"id": "a", "type": "completion", "body": LONG})
            assert (await ws.receive_json(timeout=5))["type"] == "delta"
            await ws.send_json({"id": "b", "type": "completion", "body": LONG})
            frame = await ws.receive_json(timeout=5)
            while frame["id"] != "b":
                frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "error" and frame["status"] == 429
            assert frame["retry_after"] >= 1 and frame["error"]["code"] == "rate_limit_exceeded"
            async with FastServeClient(endpoint.bound_address) as zc:
                with pytest.raises(FastServeError) as err:
                    await zc.complete("completion", LONG)
            assert err.value.status == 429 and "retry after" in err.value.message
            while frame["id"] != "a" or frame["type"] != "done":  # the accepted one finishes
                frame = await ws.receive_json(timeout=5)
            assert frame["usage"]["completion_tokens"] == 60
    finally:
        await endpoint.stop()
        await client.close()
    assert len(fake.submitted) == 1


def test_retry_after_from_measured_throughput():
    control = AdmissionControl(max_requests=2)
    backlog = [(0, 100), (50, 50)]  # 200 tokens of work left
    assert control.retry_after(1.0, backlog) == 2  # nothing measured, no cost model: 1 s each
    for i in range(20):  # 100 tokens every 0.1 s: 1000 tokens/s
        control.meter.record(10.0 + i * 0.1, 100)
    assert control.meter.tokens_per_s() == pytest.approx(1000)
    assert control.retry_after(1.0, backlog) == 1  # 0.2 s, rounded up to the minimum
    assert control.retry_after(1.0, [(0, 10**7)]) == 600  # capped


def test_retry_after_from_the_cost_model():
    cost = CostModel.affine(
        prefill_base=0.0, prefill_per_token=0.01, decode_base=0.1, decode_per_job=0.0
    )
    control = AdmissionControl(max_requests=2, cost_model=cost, max_batch_jobs=2)
    # 100 prefill tokens (1 s) + 200 decode tokens in batches of 2 (100 steps of 0.1 s).
    assert control.retry_after(1.0, [(100, 100), (0, 100)]) == 11
    assert control.retry_after(0.5, [(100, 100), (0, 100)]) == 6


def test_idle_gaps_do_not_count_as_slow_work():
    meter = ThroughputMeter(max_gap_s=1.0)
    for i in range(10):
        meter.record(i * 0.1, 10)
    for i in range(10):
        meter.record(3600 + i * 0.1, 10)  # an hour later
    rate = meter.tokens_per_s()
    assert rate is not None and 80 < rate < 120
