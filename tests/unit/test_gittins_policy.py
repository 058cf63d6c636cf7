"""GittinsPolicy with synthetic jobs: prior, learning, levels, hysteresis, starvation."""

import numpy as np
import pytest
from structlog.testing import capture_logs

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.gittins import GittinsPolicy
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.registry import make_policy
from fastserve.runtime.sim.simulator import simulate
from fastserve.runtime.sim.workload import lognormal_lengths, make_requests, poisson_arrivals

# The benchmarks' cpu-small engine: decode 25 ms + 1 ms per job, prefill 0.2 ms per token.
COST = CostModel.affine(0.0, 0.0002, 0.025, 0.001)
_ids = iter(range(10**9))


def job(prompt: int = 10, arrival: float = 0.0, max_tokens: int = 2048, tokens: int = 0) -> Job:
    j = Job(f"j{next(_ids)}", [0] * prompt, SamplingParams(max_tokens=max_tokens), arrival)
    j.output_ids = [0] * tokens
    j.num_computed = prompt + max(0, tokens - 1) if tokens else 0
    return j


def teach(p: GittinsPolicy, lengths: list[int], now: float = 0.0, **kw: int) -> None:
    """Requests that arrive and finish by themselves after `lengths` tokens."""
    for n in lengths:
        j = job(arrival=now, **kw)
        p.add(j, now)
        j.output_ids = [0] * n
        p.on_finished(j, "stop")
        p.remove(j)
    p.priority_order(now)  # rebuilds when due


def order(p: GittinsPolicy, now: float = 0.0) -> list[Job]:
    return p.priority_order(now)


def test_ranks_by_prefill_from_the_prior_then_learns_and_logs() -> None:
    with capture_logs() as logs:
        p = GittinsPolicy(COST, min_completions=20, learn_after=20)
        jobs = [job(prompt=n, arrival=0.1 * i) for i, n in enumerate((10, 3000, 50, 700))]
        for j in jobs:
            p.add(j, j.arrival)
        # Nothing learned yet: the prior's tables rank unknown outputs by their prefill.
        assert [jobs.index(j) for j in order(p, 1.0)] == [0, 2, 3, 1] and p.learning
        teach(p, [40] * 19, 2.0)
        assert p.learning  # 19 < 20 finished
        teach(p, [40], 2.0)
        assert not p.learning and p.num_rebuilds == 1
    events = [e["event"] for e in logs]
    assert events[0] == "gittins_prior" and "gittins_active" in events
    table = next(e for e in logs if e["event"] == "gittins_table")
    assert table["window"] == 20 and table["mean"] == pytest.approx(40)
    assert table["cv"] == pytest.approx(0) and table["levels"] == 12
    assert {"finished", "censored", "index_range", "level_by_age"} <= set(table)


def test_without_a_prior_arrival_order_until_learned() -> None:
    p = GittinsPolicy(COST, min_completions=5, prior_requests=0)
    jobs = [job(prompt=n, arrival=0.1 * i) for i, n in enumerate((3000, 10))]
    for j in jobs:
        p.add(j, j.arrival)
    assert order(p, 1.0) == jobs
    teach(p, [40] * 5, 2.0)
    assert not p.learning and order(p, 2.0) == jobs[::-1]


def test_uniform_lengths_keep_first_come_first_served() -> None:
    p = GittinsPolicy(COST, min_completions=50, starvation_threshold=1e9)
    teach(p, list(range(50, 101)))
    old = job(arrival=0.0, tokens=30)  # older, further along
    new = job(arrival=1.0, tokens=1)
    fresh = job(arrival=2.0)  # not even prefilled
    for j in (old, new, fresh):
        p.add(j, j.arrival)
    assert order(p, 2.0) == [old, new, fresh]
    assert old.level < fresh.level and new.level <= fresh.level  # the index rises with age


def test_bimodal_new_job_preempts_a_long_one() -> None:
    p = GittinsPolicy(COST, min_completions=50, starvation_threshold=1e9)
    teach(p, [10] * 40 + [200] * 10)
    long = job(arrival=0.0, tokens=30)  # past the short mode: surely long
    p.add(long, 0.0)
    p.on_served([(long, 0.03)], 1.0)  # it is running
    short = job(arrival=1.0, tokens=1)
    p.add(short, 1.0)
    assert order(p, 1.0) == [short, long]
    assert short.level < long.level


def test_hysteresis_running_job_keeps_its_place_within_a_level() -> None:
    p = GittinsPolicy(COST, min_completions=50, starvation_threshold=1e9)
    teach(p, list(range(50, 101)))
    waiting = job(arrival=0.0, tokens=5)
    running = job(arrival=1.0, tokens=5)
    p.add(waiting, 1.0)
    p.add(running, 1.0)
    assert order(p, 1.0) == [waiting, running]  # FCFS inside the level
    p.on_served([(running, 0.03)], 1.5)
    assert waiting.level == running.level
    assert order(p, 1.5) == [running, waiting]  # not preempted by its own level


def test_starved_job_is_boosted_then_returns() -> None:
    p = GittinsPolicy(COST, min_completions=50, starvation_threshold=5.0, boost_tokens=4)
    teach(p, [10] * 40 + [200] * 10)
    long = job(arrival=0.0, tokens=30)
    p.add(long, 0.0)
    shorts = [job(arrival=0.0, tokens=1) for _ in range(3)]
    for j in shorts:
        p.add(j, 0.0)
    p.on_served([(j, 0.03) for j in shorts], 1.0)
    assert order(p, 1.0)[-1] is long
    assert order(p, 5.5)[0] is long and long.level == 0 and p.num_promotions == 1
    long.output_ids += [0] * 4  # served its boost
    p.on_served([(long, 0.1)], 7.0)
    assert order(p, 7.0)[-1] is long and long.level > 0


def test_max_tokens_cuts_the_distribution() -> None:
    # Unsmoothed: the raw sample's young ages sit below the top level (smoothing lifts them).
    p = GittinsPolicy(COST, min_completions=50, length_smoothing=0.0)
    teach(p, [int(x) for x in lognormal_lengths(200, 100, 2.0, 0)])
    capped = job(max_tokens=20, tokens=19)  # one token left, for sure
    free = job(max_tokens=2048, tokens=19)
    p.add(capped, 0.0)
    p.add(free, 0.0)
    assert p.index(capped) == pytest.approx(1.0)
    assert order(p) == [capped, free] and capped.level == 0 < free.level
    smoothed = GittinsPolicy(COST, min_completions=50)  # the default smooths: the cap still cuts
    assert smoothed.model.smoothing > 0
    teach(smoothed, [int(x) for x in lognormal_lengths(200, 100, 2.0, 0)])
    capped2, free2 = job(max_tokens=20, tokens=19), job(max_tokens=2048, tokens=19)
    smoothed.add(free2, 0.0)
    smoothed.add(capped2, 0.0)
    assert smoothed.index(capped2) == pytest.approx(1.0)
    assert smoothed.index(free2) < 0.1


def test_ignore_max_tokens_for_forced_length_benchmarks() -> None:
    p = GittinsPolicy(COST, min_completions=20, ignore_max_tokens=True, length_smoothing=0.0)
    for n in [30] * 20:  # forced lengths end by their cap: still finished requests
        j = job(max_tokens=n, tokens=n)
        p.add(j, 0.0)
        p.on_finished(j, "length")
        p.remove(j)
    p.priority_order(0.0)
    assert not p.learning
    capped = job(max_tokens=20, tokens=19)
    p.add(capped, 0.0)
    # The cap is not read: 11 more tokens with 20/21 (1/21 is the unseen tail), not 1.
    assert p.index(capped) == pytest.approx(20 / 21 / 11)
    with pytest.raises(ValueError, match="ignore_max_tokens"):
        GittinsPolicy(COST, ignore_max_tokens=True, class_by="max_tokens")


def test_long_prompt_starts_lower() -> None:
    p = GittinsPolicy(COST, min_completions=50, unit_batch=32)
    teach(p, [int(x) for x in lognormal_lengths(200, 100, 2.0, 1)])
    short, long = job(prompt=10), job(prompt=4000)
    p.add(long, 0.0)
    p.add(short, 0.0)
    assert p.prefill_units(long) == pytest.approx(0.8 / (0.057 / 32))
    assert p.index(short) > p.index(long)
    assert order(p) == [short, long]


def test_ends_without_a_reason_are_inferred() -> None:
    p = GittinsPolicy(COST, min_completions=50)
    window = p.model.classes["*"].window
    capped = job(max_tokens=8, tokens=8)
    p.add(capped, 0.0)
    p.remove(capped)  # hit its cap: censored at 7
    eos = job(tokens=5)
    eos.eos_token_ids = (2,)
    eos.output_ids[-1] = 2
    p.add(eos, 0.0)
    p.remove(eos)  # ended on EOS: a finished one
    aborted = job(tokens=5)
    p.add(aborted, 0.0)
    p.on_finished(aborted, "abort")
    p.remove(aborted)
    p.remove(aborted)  # twice: ignored
    assert (len(window), window.num_finished) == (3, 1)


def test_rebuild_every_n_completions_or_t_seconds() -> None:
    p = GittinsPolicy(COST, min_completions=20, rebuild_every=10, rebuild_interval=5.0)
    teach(p, [30] * 20)
    assert p.num_rebuilds == 1
    teach(p, [30] * 9, 1.0)
    assert p.num_rebuilds == 1
    teach(p, [30], 1.0)
    assert p.num_rebuilds == 2
    teach(p, [30], 2.0)
    assert p.num_rebuilds == 2
    order(p, 6.1)  # 5 s since the last rebuild, one end since
    assert p.num_rebuilds == 3
    order(p, 20.0)  # nothing new: no rebuild
    assert p.num_rebuilds == 3


def test_per_class_tables_by_max_tokens() -> None:
    p = GittinsPolicy(COST, min_completions=20, rebuild_every=10, class_by="max_tokens")
    teach(p, [3] * 20, max_tokens=16)
    teach(p, [500] * 20, max_tokens=1024)
    assert set(p.model.classes) == {"*", "le16", "le1024"}
    big = job(max_tokens=1024, tokens=10)
    p.add(big, 0.0)
    # Its own class says 490 more tokens; the pooled mix would say "probably 3 tokens".
    assert p.index(big) == pytest.approx(1 / 490, rel=0.1)


def test_registry_and_simulation_end_to_end() -> None:
    assert isinstance(make_policy("gittins", COST, num_levels=8), GittinsPolicy)
    n = 300
    wl = make_requests(
        poisson_arrivals(n, 20.0, 0),
        np.full(n, 50),
        lognormal_lengths(n, 40, 2.0, 1, max_len=400),
    )
    p = GittinsPolicy(COST, min_completions=50)
    res = simulate(wl, p, COST, max_batch_jobs=8, max_tokens=512)
    assert len(res.records) == n and res.unfinished == 0
    assert not p.learning and p.num_rebuilds >= 2
    assert p.model.classes["*"].window.total_finished == n
