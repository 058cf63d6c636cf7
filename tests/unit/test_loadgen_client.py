"""The load generator's pure pieces: request bodies, stream parsing, /metrics parsing."""

import numpy as np
import pytest

from fastserve.benchmarks.loadgen import (
    RequestResult,
    apply_chunk,
    check_local_url,
    parse_sse_line,
    prompt_ids,
    request_body,
)
from fastserve.benchmarks.server_metrics import counter_delta, parse_metrics, scheduler_counters


def test_only_loopback_http_urls_are_accepted() -> None:
    assert check_local_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_local_url("http://localhost:1234") == "http://localhost:1234"
    for bad in ("http://10.0.0.1:8000", "https://127.0.0.1:8000", "http://example.com"):
        with pytest.raises(SystemExit):
            check_local_url(bad)


def test_prompts_have_the_exact_length_inside_the_range() -> None:
    rng = np.random.default_rng(0)
    ids = prompt_ids(500, rng, (3, 10), repeat=False)
    assert len(ids) == 500 and min(ids) >= 3 and max(ids) < 10
    assert prompt_ids(4, rng, (7, 10), repeat=True) == [7, 7, 7, 7]


def test_body_forces_the_output_length_and_streams_token_counts() -> None:
    body = request_body("m", [5, 6, 7], 42)
    assert body["prompt"] == [5, 6, 7] and body["model"] == "m"
    assert body["max_tokens"] == body["min_tokens"] == 42 and body["ignore_eos"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["logprobs"] == 0  # every chunk lists its tokens, even with empty text


def test_sse_lines() -> None:
    assert parse_sse_line(b"data: [DONE]\n") == "[DONE]"
    assert parse_sse_line(b"\n") is None and parse_sse_line(b": keep-alive\n") is None
    assert parse_sse_line(b'data: {"a": 1}\n') == {"a": 1}


def chunk(tokens, finish=None, text="x"):
    lp = {"tokens": tokens, "token_logprobs": [0.0] * len(tokens)} if tokens is not None else None
    return {"choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}]}


def test_chunks_count_tokens_first_token_time_and_usage() -> None:
    r = RequestResult(0, prompt_len=3, expected_output=4, scheduled=0.0)
    apply_chunk(r, chunk([]), 0.5)  # e.g. an opening chunk: no token yet
    assert r.first_token is None
    apply_chunk(r, chunk(["a"], text=""), 1.0)  # a token whose text is withheld still counts
    apply_chunk(r, chunk(["b", "c"]), 2.0)
    apply_chunk(r, chunk(["d"], finish="length"), 3.0)
    apply_chunk(r, {"choices": [], "usage": {"completion_tokens": 4}}, 3.0)
    r.finish = 3.0
    assert r.first_token == 1.0 and r.output_tokens == 4 and r.usage_tokens == 4
    assert r.finish_reason == "length" and r.ok
    rec = r.record()
    assert rec.output_len == 4 and rec.jct == 3.0 and rec.ttft == 1.0
    r.usage_tokens = 5  # the server says otherwise: not a clean request
    assert not r.ok


def test_chunks_without_logprobs_count_text_chunks() -> None:
    r = RequestResult(0, 3, 2, 0.0)
    apply_chunk(r, chunk(None, text="hi"), 1.0)
    apply_chunk(r, chunk(None, text=""), 1.5)
    assert r.output_tokens == 1 and r.first_token == 1.0


METRICS = """# HELP fastserve_frontend_requests_running Requests in flight.
# TYPE fastserve_frontend_requests_running gauge
fastserve_frontend_requests_running 0
fastserve_frontend_requests_finished_total{finish_reason="length"} 12
# TYPE fastserve_scheduler_preemptions counter
fastserve_scheduler_preemptions 7
fastserve_scheduler_offloads 3
fastserve_scheduler_uploads 2
fastserve_scheduler_busy_seconds 40.5
fastserve_scheduler_swap_wait_seconds 0.25
fastserve_scheduler_jobs 0
"""


def test_metrics_parsing_and_counter_deltas() -> None:
    m = parse_metrics(METRICS)
    assert m['fastserve_frontend_requests_finished_total{finish_reason="length"}'] == 12
    before = scheduler_counters(m)
    assert before == {
        "preemptions": 7,
        "offloads": 3,
        "uploads": 2,
        "recomputes": 0,
        "busy_seconds": 40.5,
        "swap_wait_seconds": 0.25,
    }
    after = {
        "preemptions": 10,
        "offloads": 5,
        "uploads": 5,
        "recomputes": 1,
        "busy_seconds": 50.5,
        "swap_wait_seconds": 0.5,
    }
    delta = counter_delta(before, after)
    assert delta == {
        "preemptions": 3,
        "offloads": 2,
        "uploads": 3,
        "recomputes": 1,
        "busy_seconds": 10.0,
        "swap_wait_seconds": 0.25,
        "swaps": 5,
    }
