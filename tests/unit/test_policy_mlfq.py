"""SkipJoinMLFQ / PlainMLFQ with synthetic jobs and synthetic service (no engine)."""

import math

import pytest

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.mlfq import PlainMLFQ, SkipJoinMLFQ

# prefill 1 ms/token; decode step 10 ms -> quanta 10, 20, 40, 80 ms.
COST = CostModel.affine(0.0, 0.001, 0.010, 0.0)


def job(rid: str, prompt_len: int = 1, arrival: float = 0.0) -> Job:
    return Job(rid, [0] * prompt_len, SamplingParams(), arrival)


def ids(policy, now: float = 0.0) -> list[str]:
    return [j.request_id for j in policy.priority_order(now)]


def test_quanta_from_cost_model() -> None:
    p = SkipJoinMLFQ(COST, num_queues=4)
    assert p.quanta == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert SkipJoinMLFQ(COST, base_quantum=0.5, quantum_ratio=3, num_queues=2).quanta == [0.5, 1.5]


@pytest.mark.parametrize(
    ("prompt", "level"), [(5, 0), (10, 0), (15, 1), (35, 2), (80, 3), (10**6, 3)]
)
def test_skip_join_entry_level(prompt: int, level: int) -> None:
    p = SkipJoinMLFQ(COST, num_queues=4)
    j = job("a", prompt)
    p.add(j, 0.0)
    assert j.level == level
    assert p.queue_lengths()[level] == 1


def test_plain_mlfq_starts_everyone_at_the_top() -> None:
    p = PlainMLFQ(COST, num_queues=4)
    j = job("a", 10**6)
    p.add(j, 0.0)
    assert j.level == 0


def test_demotion_past_quantum_resets_level_service() -> None:
    p = SkipJoinMLFQ(COST, num_queues=3, starvation_threshold=math.inf)
    j = job("a")
    p.add(j, 0.0)
    p.on_served([(j, 0.010)], 1.0)  # exactly the quantum: stays
    assert j.level == 0
    p.on_served([(j, 0.001)], 2.0)
    assert (j.level, j.level_service) == (1, 0.0)
    assert j.total_service == pytest.approx(0.011)
    assert j.last_served == 2.0
    p.on_served([(j, 0.05)], 3.0)
    assert j.level == 2
    p.on_served([(j, 100.0)], 4.0)  # the last queue never demotes
    assert j.level == 2
    assert p.num_demotions == 2


def test_fcfs_within_a_queue_and_served_jobs_keep_their_place() -> None:
    p = SkipJoinMLFQ(COST, num_queues=3, starvation_threshold=math.inf)
    a, b, c = job("a"), job("b"), job("c")
    for t, j in enumerate((a, b, c)):
        p.add(j, float(t))
    assert ids(p) == ["a", "b", "c"]
    p.on_served([(b, 0.005)], 3.0)  # under the quantum: no move
    assert ids(p) == ["a", "b", "c"]
    p.on_served([(a, 0.02)], 4.0)  # demoted to the tail of queue 1
    assert ids(p) == ["b", "c", "a"]
    d = job("d", arrival=5.0)
    p.add(d, 5.0)  # a newcomer in queue 0 overtakes the demoted job
    assert ids(p) == ["b", "c", "d", "a"]
    p.on_served([(b, 0.02)], 6.0)  # b joins queue 1 behind a
    assert ids(p) == ["c", "d", "a", "b"]


def test_arrival_order_within_a_queue() -> None:
    p = SkipJoinMLFQ(COST, num_queues=3, starvation_threshold=math.inf, queue_order="arrival")
    a, b = job("a", arrival=0.0), job("b", arrival=1.0)
    p.add(a, 0.0)
    p.add(b, 1.0)
    p.on_served([(b, 0.02)], 2.0)
    p.on_served([(a, 0.02)], 3.0)  # demoted after b, but arrived first
    assert ids(p) == ["a", "b"]


def test_starvation_promotes_to_the_tail_of_the_top_queue() -> None:
    p = SkipJoinMLFQ(COST, num_queues=3, starvation_threshold=1.0, starvation_check_interval=0)
    long_wait = job("long", 70, arrival=0.0)  # skip-joins queue 2
    p.add(long_wait, 0.0)
    fresh = job("fresh", 1, arrival=0.5)
    p.add(fresh, 0.5)
    assert ids(p, 0.5) == ["fresh", "long"]
    assert long_wait.level == 2
    order = ids(p, 1.5)  # waited 1.5 s >= 1.0: promoted behind "fresh"
    assert order == ["fresh", "long"]
    assert (long_wait.level, long_wait.level_service) == (0, 0.0)
    assert p.num_promotions == 1
    ids(p, 3.0)  # already at the top: not promoted again
    assert p.num_promotions == 1


def test_served_jobs_do_not_starve_and_inf_disables() -> None:
    p = SkipJoinMLFQ(COST, num_queues=2, starvation_threshold=1.0, starvation_check_interval=0)
    j = job("a")
    p.add(j, 0.0)
    p.on_served([(j, 0.02)], 0.9)  # demoted to queue 1, last served at 0.9
    ids(p, 1.5)
    assert j.level == 1
    off = SkipJoinMLFQ(COST, num_queues=2, starvation_threshold=math.inf)
    k = job("k", 50)
    off.add(k, 0.0)
    ids(off, 1e9)
    assert k.level == 1


def test_remove_and_bad_options() -> None:
    p = SkipJoinMLFQ(COST)
    j = job("a")
    p.add(j, 0.0)
    p.remove(j)
    p.remove(j)  # idempotent
    assert ids(p) == []
    with pytest.raises(ValueError, match="cost model"):
        SkipJoinMLFQ(None)
    with pytest.raises(ValueError, match="queue_order"):
        SkipJoinMLFQ(COST, queue_order="random")
    with pytest.raises(ValueError):
        SkipJoinMLFQ(COST, num_queues=0)
    assert PlainMLFQ(None).base_quantum == 0.01
