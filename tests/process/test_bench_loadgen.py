"""`fastserve bench` against a real `fastserve serve` process tree with a tiny random Llama."""

import json
import subprocess
import sys
import time

import pytest

from fastserve.benchmarks.bench_server import running_server
from tests.model_fixtures import make_tiny_llama_dir

pytestmark = pytest.mark.timeout(120)


def test_bench_replays_a_workload_with_exact_output_lengths(tmp_path) -> None:
    model_dir = make_tiny_llama_dir(tmp_path / "tiny")
    serve_args = ["--model", str(model_dir), "--num-device-blocks", "256", "--block-size", "4"]
    out = tmp_path / "bench.json"
    start = time.monotonic()
    with running_server("skip-join-mlfq", serve_args, tmp_path / "serve.log") as url:
        bench = subprocess.run(
            [
                sys.executable,
                "-m",
                "fastserve.deploy.cli",
                "bench",
                "--url",
                url,
                "--num-requests",
                "10",
                "--arrivals",
                "poisson",
                "--request-rate",
                "20",
                "--burstiness",
                "0.5",
                "--max-concurrency",
                "4",
                "--goodput",
                "ttft:60000",
                "e2el:60000",
                "--prompt-lengths",
                "lognormal",
                "--mean-prompt",
                "20",
                "--max-prompt",
                "80",
                "--lengths",
                "lognormal",
                "--mean-output",
                "12",
                "--cv",
                "2",
                "--max-output",
                "60",
                "--token-range",
                "3:250",
                "--warmup",
                "1",
                "--no-progress",
                "--out",
                str(out),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert time.monotonic() - start < 60
    report = json.loads(out.read_text())
    summary = report["summary"]
    requests = summary["requests"]
    assert len(requests) == 10 and summary["num_failed"] == 0
    for r in requests:
        assert r["error"] is None and r["finish_reason"] == "length"
        assert r["output_tokens"] == r["expected_output"] == r["usage_tokens"]
        assert r["arrival"] <= r["first_token"] <= r["finish"]
    for key in ("jct_mean", "jct_p99", "ttft_mean", "tpot_mean", "norm_latency_mean",
                "throughput_tokens_per_s", "preemptions", "swaps"):  # fmt: skip
        assert key in summary
    assert summary["num_requests"] == 10 and summary["jct_mean"] > 0
    assert "JCT (s)" in bench.stdout and "ITL (ms)" in bench.stdout
    # Streamed gaps: one fewer than the tokens of each request.
    assert summary["itl_count"] == sum(r["output_tokens"] - 1 for r in requests)
    assert summary["goodput_requests_per_s"] == pytest.approx(summary["throughput_requests_per_s"])
    vllm = summary["vllm"]
    assert vllm["completed"] == 10 and vllm["p99_itl_ms"] > 0 and "mean_e2el_ms" in vllm
    assert report["workload"]["burstiness"] == 0.5
    for png in (out.with_suffix(".png"), out.with_suffix(".queue.png")):
        assert png.read_bytes()[:4] == b"\x89PNG"
