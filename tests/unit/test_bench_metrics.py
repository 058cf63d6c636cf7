"""The bench report's metric math: ITL, percentiles, goodput, bursty arrivals, queue depth."""

import argparse

import numpy as np
import pytest

from fastserve.benchmarks.bench_report import real_summary, single_table
from fastserve.benchmarks.bench_timeline import queue_depth
from fastserve.benchmarks.loadgen import RequestResult, apply_chunk
from fastserve.benchmarks.workload_build import build_workload
from fastserve.benchmarks.workload_options import add_workload_args, resolve_workload_args
from fastserve.runtime.sim.metrics import (
    RequestRecord,
    Reservoir,
    goodput,
    parse_goodput,
    percentile_stats,
    summarize,
    vllm_names,
)
from fastserve.runtime.sim.workload import gamma_arrivals, poisson_arrivals


def chunk(n: int) -> dict:
    lp = {"tokens": ["t"] * n, "token_logprobs": [0.0] * n}
    return {"choices": [{"index": 0, "text": "x", "logprobs": lp, "finish_reason": None}]}


def test_itl_is_the_gap_between_chunks_that_carry_tokens() -> None:
    r = RequestResult(0, 3, 4, 0.0)
    gaps = [apply_chunk(r, c, t) for c, t in ((chunk(0), 0.1), (chunk(1), 0.5), (chunk(2), 0.7),
                                              (chunk(0), 0.8), (chunk(1), 1.2))]  # fmt: skip
    assert gaps[0] is None and gaps[1] is None and gaps[3] is None  # no token, first, none
    assert gaps[2] == pytest.approx(0.2) and gaps[4] == pytest.approx(0.5)
    assert r.max_itl == pytest.approx(0.5) and r.first_token == 0.5 and r.output_tokens == 4


def test_reservoir_is_exact_below_capacity_and_bounded_above() -> None:
    small = Reservoir(capacity=10)
    for v in (0.1, 0.2, 0.3):
        small.add(v)
    assert sorted(small.values()) == [0.1, 0.2, 0.3] and small.count == 3
    s = small.stats("itl")
    assert s["itl_mean"] == pytest.approx(0.2) and s["itl_median"] == pytest.approx(0.2)
    big = Reservoir(capacity=2000, seed=1)
    values = np.random.default_rng(0).uniform(0.0, 1.0, 100_000)
    for v in values:
        big.add(float(v))
    assert big.values().size == 2000 and big.count == 100_000 and big.max == values.max()
    s = big.stats("itl")
    assert s["itl_mean"] == pytest.approx(values.mean())  # exact, not sampled
    assert s["itl_median"] == pytest.approx(0.5, abs=0.04)
    assert s["itl_p90"] == pytest.approx(0.9, abs=0.03)
    assert Reservoir().stats("itl")["itl_count"] == 0


def test_percentiles_interpolate_as_numpy_and_vllm() -> None:
    s = percentile_stats(np.arange(1.0, 101.0), "x")
    assert s == pytest.approx({"x_mean": 50.5, "x_median": 50.5, "x_p90": 90.1, "x_p99": 99.01})
    assert np.isnan(percentile_stats(np.zeros(0), "x")["x_p99"])


# (arrival, output tokens, first token, finish): TTFT, TPOT, E2EL per request below.
RECORDS = [
    RequestRecord("a", 0.0, 10, 11, 0.2, 1.2),  # 0.2 s, 0.1 s, 1.2 s
    RequestRecord("b", 1.0, 10, 3, 1.5, 2.5),  # 0.5 s, 0.5 s, 1.5 s
    RequestRecord("c", 2.0, 10, 1, 2.1, 2.1),  # 0.1 s, 0 (one token), 0.1 s
    RequestRecord("d", 3.0, 10, 5, 3.9, 4.0),  # 0.9 s, 0.025 s, 1.0 s
]


def test_goodput_counts_requests_meeting_every_slo_per_second() -> None:
    span = 4.0  # first arrival 0 to last finish 4
    assert goodput(RECORDS, {}, span) == pytest.approx(4 / span)
    assert goodput(RECORDS, {"ttft": 0.5}, span) == pytest.approx(3 / span)
    assert goodput(RECORDS, {"ttft": 0.5, "tpot": 0.2}, span) == pytest.approx(2 / span)
    assert goodput(RECORDS, {"ttft": 0.5, "tpot": 0.2, "e2el": 1.0}, span) == pytest.approx(
        1 / span
    )  # only c, whose TPOT counts as 0
    s = summarize(RECORDS, slo=parse_goodput(["ttft:500", "tpot:200"]))
    assert s["goodput_requests_per_s"] == pytest.approx(0.5) and s["slo_ttft_s"] == 0.5
    assert s["throughput_total_tokens_per_s"] == pytest.approx((40 + 20) / 4.0)
    names = vllm_names(s)
    assert names["request_goodput"] == pytest.approx(0.5) and names["completed"] == 4
    assert names["mean_ttft_ms"] == pytest.approx(425.0)
    assert names["median_e2el_ms"] == pytest.approx(1100.0)
    for bad in (["ttft"], ["itl:5"], ["ttft:-1"], ["tpot:nan"]):
        with pytest.raises(ValueError):
            parse_goodput(bad)


def test_real_summary_prints_itl_goodput_and_slos() -> None:
    results = [RequestResult(0, 10, 3, 0.0, 0.0, 0.5, 1.5, 3, 3, "length")]
    itl = Reservoir()
    for gap in (0.4, 0.6):
        itl.add(gap)
    s = real_summary(results, {}, 2.0, itl=itl, slo={"e2el": 2.0})
    assert s["itl_mean"] == pytest.approx(0.5) and s["goodput_requests_per_s"] > 0
    text = single_table(s)
    assert "ITL (ms)" in text and "goodput_requests_per_s" in text and "e2el <= 2000 ms" in text


@pytest.mark.parametrize("shape", [0.25, 1.0, 4.0])
def test_gamma_arrivals_keep_the_rate_with_cv_one_over_sqrt_shape(shape: float) -> None:
    t = gamma_arrivals(200_000, 4.0, shape, np.random.default_rng(0))
    gaps = np.diff(t)
    assert t[0] == 0.0 and (len(t) - 1) / t[-1] == pytest.approx(4.0, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(shape), rel=0.03)


def test_burstiness_one_is_the_poisson_stream_and_flags_reach_the_workload() -> None:
    same = gamma_arrivals(50, 2.0, 1.0, np.random.default_rng(3))
    assert np.array_equal(same, poisson_arrivals(50, 2.0, np.random.default_rng(3)))
    p = argparse.ArgumentParser()
    add_workload_args(p)
    argv = ["--arrivals", "poisson", "--request-rate", "5", "--num-requests", "2000"]
    calm = build_workload(resolve_workload_args(p.parse_args(argv)))
    bursty = build_workload(resolve_workload_args(p.parse_args([*argv, "--burstiness", "0.2"])))
    cv = [np.diff([r.arrival for r in wl]).std() / np.diff([r.arrival for r in wl]).mean()
          for wl in (calm, bursty)]  # fmt: skip
    assert cv[0] == pytest.approx(1.0, abs=0.1) and cv[1] == pytest.approx(5**0.5, rel=0.15)
    assert [r.output_len for r in calm] == [r.output_len for r in bursty]  # lengths kept
    with pytest.raises(SystemExit):  # the trace has its own arrival pattern
        resolve_workload_args(p.parse_args(["--burstiness", "0.5"]))


def test_queue_depth_counts_waiting_and_streaming_requests() -> None:
    rows = [
        {"arrival": 0.0, "first_token": 1.0, "finish": 3.0},
        {"arrival": 0.5, "first_token": 2.0, "finish": 2.5},
        {"arrival": 1.0, "first_token": None, "finish": 1.5},  # failed before a token
        {"arrival": 2.0, "first_token": None, "finish": None},  # never ended: left out
    ]
    times, waiting, running = queue_depth(rows)
    assert times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert waiting.tolist() == [1, 2, 2, 1, 0, 0, 0]  # at 1.0: one starts, one arrives
    assert running.tolist() == [0, 0, 1, 1, 2, 1, 0]
    assert queue_depth([])[0].size == 0
