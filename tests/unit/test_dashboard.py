"""/dashboard and /dashboard/data in-process, against the fake scheduler: the JSON the page
renders, its history and rates, and the same key rules as /metrics."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastserve.protocol.to_frontend import PreemptionRecord, SchedulerStats
from fastserve.runtime.frontend.dashboard import PAGE, DashboardHistory
from fastserve.runtime.frontend.options import FrontendOptions
from fastserve.runtime.frontend.service import FrontendService
from tests.fake_scheduler import EchoScheduler

KEY = "sk-dash"


def stats(tick: int, preemptions: int) -> SchedulerStats:
    return SchedulerStats(
        tick, 3, 60, 100, 40, 50, preemptions, 2, 1, 0, 4.0, 0.1,
        queued=1, running=1, swapped=1, level_depth=[1, 0, 2], demotions=3, promotions=1,
        recent_preemptions=[PreemptionRecord("req-1", tick - 2, "device"),
                            PreemptionRecord("req-2", tick - 1, "host")],
    )  # fmt: skip


async def make_client(tok, **options) -> tuple[TestClient, FrontendService]:
    fake = EchoScheduler(tok)
    service = FrontendService(fake.send, tokenizer=tok, options=FrontendOptions(**options))
    fake.service = service
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    return client, service


async def test_data_reports_state_latency_and_history(tok):
    client, service = await make_client(tok)
    try:
        bodies = [{"prompt": f"hello {i}", "max_tokens": 5} for i in range(4)]
        done = await asyncio.gather(*(client.post("/v1/completions", json=b) for b in bodies))
        assert all(r.status == 200 for r in done)
        service.metrics.scheduler = stats(tick=40, preemptions=5)
        resp = await client.get("/dashboard/data")
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        data = await resp.json()
    finally:
        await client.close()
    assert data["status"] == "ok" and data["requests"]["in_flight"] == 0
    assert (data["requests"]["queued"], data["requests"]["swapped"]) == (1, 1)
    assert data["requests"]["received_total"] == 4 and data["levels"] == [1, 0, 2]
    assert data["kv"]["device"] == {"used": 40, "total": 100}
    assert data["kv"]["host"] == {"used": 10, "total": 50}
    assert data["generation_tokens_total"] == 20
    assert data["latency"]["jct"]["n"] == 4 and data["latency"]["ttft"]["p99"] > 0
    assert data["counters"]["preemptions"] == 5 and data["counters"]["demotions"] == 3
    assert [p["request_id"] for p in data["recent_preemptions"]] == ["req-2", "req-1"]
    assert data["recent_preemptions"][0]["ticks_ago"] == 1
    history = data["history"]
    assert history["t"] and all(t <= 0 for t in history["t"])  # the app's sampler ran
    assert all(len(history[k]) == len(history["t"]) for k in ("levels", "running", "kv_host_used"))


async def test_history_rates_are_per_second_and_survive_counter_resets(tok):
    client, service = await make_client(tok)
    try:
        history = DashboardHistory(service)
        service.metrics.scheduler = stats(tick=10, preemptions=4)
        history.sample(now=100.0)
        await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 6})
        service.metrics.scheduler = stats(tick=20, preemptions=10)
        point = history.sample(now=102.0)
        assert point["tokens_per_s"] == 3.0 and point["preemptions_per_s"] == 3.0
        assert point["levels"] == [1, 0, 2] and point["kv_device_used"] == 0.4
        service.metrics.scheduler = stats(tick=1, preemptions=0)  # a new engine generation
        assert history.sample(now=103.0)["preemptions_per_s"] == 0.0
        service.metrics.scheduler = None  # engine down: no scheduler numbers at all
        assert history.sample(now=104.0)["kv_device_used"] is None
        data = history.data(now=104.0)
        assert data["history"]["t"] == [-4.0, -2.0, -1.0, 0.0]
        assert data["requests"]["queued"] is None and data["kv"]["device"] is None
    finally:
        await client.close()


async def test_page_is_self_contained_and_open():
    page = PAGE.read_text()
    assert "<canvas" in page and "/data" in page
    assert re.search(r"(src|href)=|https?://|@import", page) is None  # nothing to fetch


@pytest.mark.parametrize("public", [False, True])
async def test_data_needs_the_key_like_metrics(tok, public):
    client, _ = await make_client(tok, api_keys=(KEY,), metrics_public=public)
    try:
        page = await client.get("/dashboard")
        assert page.status == 200 and page.content_type == "text/html"
        assert (await client.get("/dashboard/data")).status == (200 if public else 401)
        assert (await client.get("/metrics")).status == (200 if public else 401)
        auth = {"Authorization": f"Bearer {KEY}"}
        assert (await client.get("/dashboard/data", headers=auth)).status == 200
    finally:
        await client.close()
