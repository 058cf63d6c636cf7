"""Workload generators (trace, arrivals, length samplers) and the metrics summary."""

import numpy as np
import pytest

from fastserve.runtime.sim.metrics import RequestRecord, summarize
from fastserve.runtime.sim.workload import (
    azure_workload,
    bimodal_lengths,
    describe,
    lognormal_lengths,
    pareto_lengths,
    poisson_arrivals,
    read_azure_trace,
    trace_arrivals,
    uniform_lengths,
)

CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 23:59:59.5000000,100,10
2023-11-16 23:59:59.0000000,50,5
2023-11-17 00:00:01.2500000,4000,300
"""


def test_azure_trace_parsing_and_scaling(tmp_path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(CSV)
    t, p, o = read_azure_trace(str(path))
    assert t == pytest.approx([0.0, 0.5, 2.25])  # sorted, across midnight
    assert list(p) == [50, 100, 4000] and list(o) == [5, 10, 300]
    wl = azure_workload(
        str(path),
        rate_scale=2.0,
        prompt_scale=0.5,
        output_scale=2.0,
        max_prompt=1000,
        max_output=100,
    )
    assert [r.arrival for r in wl] == pytest.approx([0.0, 0.25, 1.125])
    assert [r.prompt_len for r in wl] == [25, 50, 1000]
    assert [r.output_len for r in wl] == [10, 20, 100]
    assert [r.prompt_len for r in azure_workload(str(path), start=1, limit=1)] == [100]
    assert trace_arrivals(str(path), 2, rate_scale=0.5) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError):
        trace_arrivals(str(path), 5)


def test_length_samplers_hit_their_moments() -> None:
    rng = np.random.default_rng(0)
    x = lognormal_lengths(200_000, 100, 2.0, rng)
    assert x.mean() == pytest.approx(100, rel=0.05)
    assert x.std() / x.mean() == pytest.approx(2.0, rel=0.15)
    y = pareto_lengths(200_000, 100, 2.0, rng, max_len=5000)
    assert y.max() <= 5000 and y.min() >= 1 and y.mean() == pytest.approx(100, rel=0.15)
    b = bimodal_lengths(10_000, 10, 1000, 0.1, rng)
    assert np.mean(b > 500) == pytest.approx(0.1, abs=0.02)
    u = uniform_lengths(1000, 5, 7, rng)
    assert set(np.unique(u)) == {5, 6, 7}
    a = poisson_arrivals(20_000, 4.0, rng)
    assert a[0] == 0.0 and (20_000 - 1) / a[-1] == pytest.approx(4.0, rel=0.05)


def test_summarize_and_describe() -> None:
    recs = [
        RequestRecord("a", 0.0, 10, 4, 1.0, 4.0, num_preemptions=2, num_swaps=1),
        RequestRecord("b", 1.0, 10, 1, 2.0, 2.0),
    ]
    s = summarize(recs)
    assert s["jct_mean"] == pytest.approx(2.5)
    assert s["ttft_mean"] == pytest.approx(1.0)
    assert s["tpot_mean"] == pytest.approx(1.0)  # only "a": 3 s over 3 tokens
    assert s["norm_latency_mean"] == pytest.approx((1.0 + 1.0) / 2)
    assert s["throughput_tokens_per_s"] == pytest.approx(5 / 4)
    assert (s["preemptions"], s["swaps"]) == (2, 1)
    assert summarize([]) == {"num_requests": 0}
    assert recs[0].to_dict()["request_id"] == "a"
    from fastserve.runtime.sim.workload import Request

    d = describe([Request(0.0, 10, 5), Request(2.0, 30, 15)])
    assert d["rate_per_s"] == pytest.approx(0.5) and d["output_len_mean"] == 10
