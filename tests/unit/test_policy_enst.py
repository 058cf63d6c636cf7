"""Estimated next-scheduled time (ENST) from a priority order."""

import math

import pytest

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.enst import estimate_next_scheduled
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.mlfq import SkipJoinMLFQ


def job(rid: str, level: int, service: float = 0.0, last: float = 0.0) -> Job:
    j = Job(rid, [0], SamplingParams(), 0.0)
    j.level, j.level_service, j.last_served = level, service, last
    return j


def test_enst_sums_the_service_of_jobs_ahead() -> None:
    quanta = [1.0, 2.0, 4.0]
    order = [job("a", 0, 0.25), job("b", 0), job("c", 1, 0.5), job("d", 2)]
    est = estimate_next_scheduled(order, quanta, batch_slots=1, now=0.0)
    assert est["a"] == 0.0
    assert est["b"] == pytest.approx(0.75)  # a's rest of queue 0
    # c (queue 1): a and b use up queue 0 (0.75 + 1), then join queue 1 behind c.
    assert est["c"] == pytest.approx(0.75 + 1.0)
    # d (queue 2): a, b cross queue 1 entirely; c finishes its queue 1 quantum.
    assert est["d"] == pytest.approx(0.75 + 1.0 + 2 * 2.0 + 1.5)


def test_enst_free_slots_and_promotion_bound() -> None:
    quanta = [1.0, 2.0]
    order = [job("a", 0), job("b", 1, last=0.0)]
    assert estimate_next_scheduled(order, quanta, batch_slots=2, now=5.0)["b"] == 0.0
    est = estimate_next_scheduled(order, quanta, 1, now=5.0, starvation_threshold=5.5)
    assert est["b"] == pytest.approx(0.5)  # promoted in 0.5 s, before a's 1.0 s
    assert estimate_next_scheduled(order, quanta, 1, now=5.0)["b"] == 1.0
    assert estimate_next_scheduled(order, quanta, 1, 5.0, math.inf)["a"] == 0.0


def test_policy_helper_uses_its_quanta() -> None:
    p = SkipJoinMLFQ(CostModel.affine(0, 0.001, 0.01, 0), starvation_threshold=math.inf)
    a, b = Job("a", [0], SamplingParams(), 0.0), Job("b", [0], SamplingParams(), 0.0)
    p.add(a, 0.0)
    p.add(b, 0.0)
    assert p.next_scheduled_estimates(0.0, batch_slots=1) == {"a": 0.0, "b": pytest.approx(0.01)}
