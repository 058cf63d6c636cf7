"""The discrete-event simulator: hand-checked FCFS, oracle vs FCFS, memory pressure."""

import numpy as np
import pytest

from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.registry import make_policy
from fastserve.runtime.sim import Request, simulate, unloaded_jct
from fastserve.runtime.sim.workload import lognormal_lengths, make_requests, poisson_arrivals

# prefill 1 ms per token, decode step 100 ms whatever the batch.
COST = CostModel.affine(0.0, 0.001, 0.1, 0.0)


def test_fcfs_one_slot_matches_hand_computation() -> None:
    wl = [Request(0.0, 10, 3), Request(0.0, 10, 3)]
    res = simulate(wl, make_policy("fcfs"), COST, max_batch_jobs=1)
    # A: prefill 0.01 (token 1), two decodes -> 0.21. B then: 0.22, 0.32, 0.42.
    jct = sorted(r.jct for r in res.records)
    assert jct == pytest.approx([0.21, 0.42])
    assert res.summary["jct_mean"] == pytest.approx(0.315)
    assert res.summary["ttft_mean"] == pytest.approx((0.01 + 0.22) / 2)
    assert res.num_iterations == 6
    assert res.unfinished == 0


def test_fcfs_batched_matches_hand_computation() -> None:
    wl = [Request(0.0, 10, 3), Request(0.0, 10, 3), Request(0.05, 20, 1)]
    res = simulate(wl, make_policy("fcfs"), COST, max_batch_jobs=2)
    by_id = {r.request_id: r for r in res.records}
    # Both prefills in one iteration (0.02), two shared decodes -> 0.22. C arrives at 0.05
    # but both slots are busy: prefill 0.22 -> 0.24, one token, done.
    assert by_id["r0"].finish == pytest.approx(0.22)
    assert by_id["r1"].finish == pytest.approx(0.22)
    assert by_id["r2"].finish == pytest.approx(0.24)
    assert by_id["r2"].jct == pytest.approx(0.19)
    assert res.busy_time == pytest.approx(0.24)


def test_idle_gaps_jump_to_next_arrival_and_unloaded_jct() -> None:
    wl = [Request(0.0, 10, 3), Request(100.0, 10, 3)]
    res = simulate(wl, make_policy("skip-join-mlfq", COST), COST)
    assert [r.jct for r in res.records] == pytest.approx([0.21, 0.21])
    assert unloaded_jct(wl[0], COST) == pytest.approx(0.21)


def heavy_tailed(n: int = 400, rate: float = 8.0, seed: int = 1) -> list[Request]:
    rng = np.random.default_rng(seed)
    outputs = lognormal_lengths(n, 40, 3.0, rng, max_len=800)
    prompts = lognormal_lengths(n, 50, 1.0, rng, max_len=400)
    return make_requests(poisson_arrivals(n, rate, rng), prompts, outputs)


def test_oracle_and_mlfq_beat_fcfs_on_heavy_tails() -> None:
    cost = CostModel.affine(0.0, 0.0002, 0.025, 0.001)
    wl = heavy_tailed()
    kw = dict(max_batch_jobs=8, max_batch_tokens=512, num_device_blocks=4096)
    s = {
        n: simulate(wl, make_policy(n, cost), cost, **kw).summary
        for n in ("fcfs", "oracle", "skip-join-mlfq")
    }
    assert all(v["num_requests"] == len(wl) for v in s.values())
    assert s["oracle"]["jct_mean"] <= s["fcfs"]["jct_mean"]
    assert s["skip-join-mlfq"]["norm_latency_mean"] < s["fcfs"]["norm_latency_mean"]


@pytest.mark.parametrize(("host", "overlap"), [(None, True), (None, False), (0, True)])
def test_memory_pressure_swaps_or_recomputes_and_finishes(host, overlap) -> None:
    cost = CostModel.affine(0.0, 0.0002, 0.025, 0.001)
    wl = heavy_tailed(n=150, rate=20.0)
    res = simulate(
        wl,
        make_policy("skip-join-mlfq", cost),
        cost,
        max_batch_jobs=16,
        max_batch_tokens=512,
        num_device_blocks=80,
        block_size=16,
        num_host_blocks=host,
        swap_time_per_block=1e-4,
        overlap_swaps=overlap,
    )
    assert res.summary["num_requests"] == len(wl)
    assert sum(r.output_len for r in res.records) == sum(r.output_len for r in wl)
    assert res.peak_device_blocks <= 80
    if host is None:
        assert res.blocks_swapped > 0 and res.summary["swaps"] > 0
    else:
        assert res.num_recomputes > 0


def test_rejects_requests_that_can_never_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        simulate([Request(0.0, 100, 100)], make_policy("fcfs"), COST, num_device_blocks=4)


def test_max_time_stops_early() -> None:
    wl = [Request(0.0, 10, 1000)]
    res = simulate(wl, make_policy("fcfs"), COST, max_time=1.0)
    assert res.unfinished == 1 and res.records == []
