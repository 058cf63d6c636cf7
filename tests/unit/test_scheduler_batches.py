"""The server's core and the simulator build batches with the same code, request priority
classes sit above the policy, and the admission bound holds (synthetic results only)."""

import copy

from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import SampledToken, StepResult, SubmitRequest
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.sched.batching import BatchLimits, pick_batch
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.mlfq import SkipJoinMLFQ
from fastserve.runtime.sched.oracle import TotalWorkOracle
from fastserve.runtime.sched.policy import FCFSPolicy
from fastserve.runtime.sched.scheduler_core import SchedulerCore

BS = 4
COST = CostModel.affine(0.0, 0.001, 0.010, 0.001)


def core_with(policy, jobs=3, tokens=24, blocks=40, started=None) -> SchedulerCore:
    limits = BatchLimits(jobs, tokens, BS, 1024, started)
    return SchedulerCore(policy, limits, KVBlockPool(blocks), KVBlockPool(0, "host"), (2,))


def submit(core, rid, prompt_len, max_tokens=3, priority=0, now=0.0):
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    req = SubmitRequest(rid, [5] * prompt_len, sp, 0.0, priority=priority)
    assert core.add(req, now) == []


def step(core, plan, now):
    tokens = [SampledToken(s.request_id, 7, -0.1) for s in plan.scheduled if s.sample]
    return core.update(StepResult(plan.tick, 0, tokens, 0.01), now)


def test_core_plans_are_the_batch_builders_choice_tick_after_tick() -> None:
    core = core_with(SkipJoinMLFQ(COST), jobs=3, tokens=24, blocks=30)
    for i, n in enumerate([20, 3, 9, 14, 2]):
        submit(core, f"r{i}", n, max_tokens=2 + i)
    for tick in range(30):
        if not core.jobs:
            break
        order = core.priority_order(float(tick))
        # What the builder picks from a copy of the jobs must be what the core schedules
        # (with the core's prefix-cache look-up: the prompts repeat one token).
        mirror = copy.deepcopy(order)
        expected = [
            (e.job.request_id, e.num_new_tokens)
            for e in pick_batch(
                mirror, max_jobs=3, max_tokens=24, free_blocks=core.device.num_free,
                block_size=BS, prefix=core.prefix.lookup,
            )  # fmt: skip
        ]
        plan = core.schedule(float(tick))
        assert [(s.request_id, s.num_new_tokens) for s in plan.scheduled] == expected
        step(core, plan, float(tick))
    assert not core.jobs


def test_admission_bound_keeps_newcomers_out_until_a_started_job_ends() -> None:
    core = core_with(FCFSPolicy(), jobs=2, tokens=8, blocks=40, started=2)
    for rid in ("a", "b", "c"):
        submit(core, rid, 6, max_tokens=2)
    plan = core.schedule(0.0)
    # a takes 6 tokens, b a 2-token chunk: two jobs started, c must wait for one to end.
    assert [(s.request_id, s.num_new_tokens) for s in plan.scheduled] == [("a", 6), ("b", 2)]
    step(core, plan, 0.0)
    plan = core.schedule(0.0)
    assert [s.request_id for s in plan.scheduled] == ["a", "b"]
    step(core, plan, 0.0)
    plan = core.schedule(0.0)  # a finished (2 tokens): c may start now
    assert "c" in [s.request_id for s in plan.scheduled]


def test_priority_classes_come_first_and_starving_jobs_join_the_top_class() -> None:
    policy = SkipJoinMLFQ(COST, starvation_threshold=5.0)
    core = core_with(policy, jobs=1, tokens=64)
    submit(core, "low", 4, priority=1, now=0.0)
    submit(core, "high", 4, priority=-1, now=0.0)
    submit(core, "normal", 4, priority=0, now=0.0)
    assert [j.request_id for j in core.priority_order(0.0)] == ["high", "normal", "low"]
    # The others were just served; "low", unserved for 6 s > 5 s, is starving and joins
    # the top class, where the policy's own order (arrival here) puts it first.
    core.jobs["high"].last_served = core.jobs["normal"].last_served = 5.5
    assert [j.request_id for j in core.priority_order(6.0)] == ["low", "high", "normal"]


def test_total_work_oracle_counts_the_prefill() -> None:
    oracle = TotalWorkOracle(COST, unit_batch=1)
    long_prompt = Job("long-prompt", [0] * 500, SamplingParams(), 0.0, true_output_len=2)
    long_output = Job("long-output", [0] * 5, SamplingParams(), 0.0, true_output_len=20)
    for job in (long_prompt, long_output):
        oracle.add(job, 0.0)
    # 500 prompt tokens cost 0.5 s; 20 tokens of decode at 11 ms each cost 0.22 s.
    assert [j.request_id for j in oracle.priority_order(0.0)] == ["long-output", "long-prompt"]
    long_prompt.num_computed = 500
    assert [j.request_id for j in oracle.priority_order(0.0)] == ["long-prompt", "long-output"]
