"""The soak script's logic on a tiny model: 200 requests over HTTP, SSE, the websocket
and ZeroMQ, 30% cut part-way, hostile bodies mixed in; then nothing may be held (KV
blocks, scheduler jobs, running requests) and nothing may have failed."""

from __future__ import annotations

import pytest

from fastserve.benchmarks.soak import SoakConfig, run_soak
from fastserve.benchmarks.soak_checks import format_report
from tests.model_fixtures import make_tiny_llama_dir

pytestmark = pytest.mark.timeout(120)


def test_small_soak_leaks_nothing(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "model")
    # A device pool this small makes the scheduler preempt and offload under the load,
    # so aborts and disconnects also land on jobs that are swapped out or moving.
    server_args = ["--no-auto-profile", "--block-size", "4", "--max-model-len", "256"]
    server_args += ["--num-device-blocks", "192", "--num-host-blocks", "256"]
    # Short prompts and outputs: the checks need many requests, not long ones, and a
    # shared CI core runs the tiny model 10x slower at times (bounded: at least half done).
    cfg = SoakConfig(
        n=200,
        model=str(model),
        concurrency=16,
        max_seconds=40,
        request_timeout_s=40,
        max_tokens=8,
        prompt_words=12,
        server_args=server_args,
        ready_timeout_s=120,
        out=str(tmp_path / "soak.json"),
        log_dir=str(tmp_path),
    )
    report = run_soak(cfg)
    print("\n" + format_report(report))
    assert report["passed"], (report["failures"], report["error_examples"])
    assert report["completed"] >= 100, report["completed"]
    for channel, counts in report["outcomes"].items():
        assert counts.get("ok", 0) > 0 and counts.get("cut", 0) > 0, (channel, counts)
    assert sum(c.get("refused", 0) for c in report["outcomes"].values()) > 0
    assert {"start", "middle", "end"} <= set(report["rss_points"])
    assert {row["process"] for row in report["rss"]} >= {"scheduler", "worker-0", "frontend"}
