"""Async scheduling: a tick built while the previous one runs, a job scheduled one step
ahead of its result and fed by the workers' own sample (no engine, no processes)."""

import pytest

from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import SampledToken, StepFailed, StepResult, SubmitRequest
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.sched.batching import BatchLimits
from fastserve.runtime.sched.policy import FCFSPolicy
from fastserve.runtime.sched.scheduler_core import SchedulerCore
from fastserve.runtime.worker_state import WorkerJobTable
from tests.fake_kv import FakeKV, make_core, next_token

EOS = 2
BLOCKS = 32


def core_and_table() -> tuple[SchedulerCore, WorkerJobTable]:
    core = SchedulerCore(FCFSPolicy(), BatchLimits(4, 64, 4, 1024), KVBlockPool(BLOCKS),
                         KVBlockPool(0, "host"), (EOS,), async_scheduling=True)  # fmt: skip
    return core, WorkerJobTable(feeds_samples=True)


def submit(core, rid, prompt_len=5, **sampling):
    sp = SamplingParams(**{"max_tokens": 4, **sampling})
    assert core.add(SubmitRequest(rid, list(range(10, 10 + prompt_len)), sp, 0.0), 0.0) == []


def run(table: WorkerJobTable, plan: TickPlan, token=7) -> StepResult:
    """A worker: apply the plan, 'sample' `token` for every entry that samples, feed it."""
    entries = table.apply(plan)
    sampled = [SampledToken(e.request_id, token, -0.1) for e in entries if e.sample]
    table.record(sampled)
    return StepResult(plan.tick, 0, sampled, 0.01)


def test_the_next_step_is_built_before_the_result_and_fed_by_the_worker():
    core, table = core_and_table()
    submit(core, "a")
    p1 = core.schedule(0.0)
    p2 = core.schedule(0.0)  # tick 1 still running
    assert [s.num_new_tokens for s in p1.scheduled] == [5]
    [ahead] = p2.scheduled
    assert ahead.num_new_tokens == 1 and ahead.sample and ahead.append_token_ids == []
    # A third tick would put the job in flight twice ahead: nothing to run.
    assert not core.has_work()
    r1 = run(table, p1, token=11)
    [entry] = table.apply(p2)
    assert entry.token_ids == [11] and entry.start_pos == 5  # the worker's own sample
    out = core.update(r1, 0.0)
    assert out[0].token_ids == [11]
    # Once tick 1's result is in, the step after tick 2 can be built.
    assert core.has_work()
    p3 = core.schedule(0.0)
    assert [s.num_new_tokens for s in p3.scheduled] == [1]
    assert p3.scheduled[0].append_token_ids == []  # the workers have every sample


def test_no_step_is_built_ahead_past_max_tokens():
    core, table = core_and_table()
    submit(core, "a", max_tokens=2, ignore_eos=True)
    p1, p2 = core.schedule(0.0), core.schedule(0.0)
    out = core.update(run(table, p1), 0.0)
    p3 = core.schedule(0.0)  # tick 2 samples the last token: nothing after it
    assert p3.scheduled == []
    out += core.update(run(table, p2), 0.0)
    assert [t for o in out for t in o.token_ids] == [7, 7]
    assert out[-1].finish_reason == "length"
    assert sum(len(p.scheduled) for p in (p1, p2, p3)) == 2  # no wasted step
    assert core.device.num_free == BLOCKS


def test_an_eos_wastes_the_step_built_ahead_and_its_result_is_dropped():
    core, table = core_and_table()
    submit(core, "a", max_tokens=10)
    submit(core, "b", max_tokens=3)
    p1, p2 = core.schedule(0.0), core.schedule(0.0)
    assert {s.request_id for s in p2.scheduled} == {"a", "b"}
    out = core.update(run(table, p1, token=EOS), 0.0)
    assert {o.request_id: o.finish_reason for o in out} == {"a": "stop", "b": "stop"}
    assert core.jobs == {}
    # Tick 2 ran anyway (the worker had it); its tokens end nobody and reach nobody.
    assert core.update(run(table, p2, token=9), 0.0) == []
    p3 = core.schedule(0.0)
    assert sorted(p3.released) == ["a", "b"] and p3.scheduled == []
    assert core.device.num_free == BLOCKS and core.in_flight_ticks() == 0


def test_an_abort_while_two_ticks_hold_the_job_ends_it_once():
    core, table = core_and_table()
    submit(core, "a", max_tokens=10, ignore_eos=True)
    p1, p2 = core.schedule(0.0), core.schedule(0.0)
    assert core.abort("a", "abort") == []  # in flight: ends when tick 1's result is in
    out = core.update(run(table, p1), 0.0)
    assert [(o.request_id, o.finish_reason) for o in out] == [("a", "abort")]
    assert core.update(run(table, p2), 0.0) == []
    assert core.device.num_free == BLOCKS


def test_a_failed_tick_fails_its_jobs_once_and_the_tick_built_ahead_skips_them():
    core, table = core_and_table()
    submit(core, "a", max_tokens=10, ignore_eos=True)
    p1 = core.schedule(0.0)
    submit(core, "b", max_tokens=2, ignore_eos=True)  # arrives while tick 1 runs
    p2 = core.schedule(0.0)
    assert {s.request_id for s in p2.scheduled} == {"a", "b"}
    table.apply(p1)
    table.fail(p1)  # the worker's forward raised
    out = core.fail_tick(StepFailed(p1.tick, 0, ["a"], "RuntimeError: boom"))
    assert [(o.request_id, o.finish_reason) for o in out] == [("a", "error")]
    entries = table.apply(p2)  # "a" is dropped, "b" runs
    assert [e.request_id for e in entries] == ["b"]
    sampled = [SampledToken("b", 7, -0.1)]
    table.record(sampled)
    out = core.update(StepResult(p2.tick, 0, sampled, 0.01), 0.0)
    assert [o.request_id for o in out] == ["b"]
    p3 = core.schedule(0.0)
    assert "a" in p3.released
    table.apply(p3)
    assert "a" not in table.failed


def test_the_table_feeds_samples_only_when_asked():
    plain = WorkerJobTable()
    core, _ = core_and_table()
    submit(core, "a")
    p1 = core.schedule(0.0)
    plain.apply(p1)
    plain.record([SampledToken("a", 11, 0.0)])
    assert plain.jobs["a"].token_ids == list(range(10, 15))


@pytest.mark.parametrize("blocks", [64, 8, 6])  # 8: jobs wait for blocks; 6: are recomputed
def test_pipelined_runs_give_every_job_the_tokens_of_one_tick_at_a_time(blocks):
    """Prefix-sharing prompts, different lengths, jobs that stop on a stop token: each job
    gets exactly the tokens the sequential run gives it, and FakeKV checks every read."""
    recomputes = []

    def outputs(async_scheduling: bool) -> dict[str, list[int]]:
        core = make_core(blocks=blocks, jobs=4, tokens=16, async_scheduling=async_scheduling)
        kv = FakeKV(core)
        shared = list(range(30, 38))
        for i in range(6):
            prompt = shared + list(range(50 + i, 50 + i + 1 + i % 3))
            # Each job stops at the token its fourth output position would give.
            stop = next_token(f"r{i}", len(prompt) + 3)
            sp = SamplingParams(max_tokens=3 + 2 * i, stop_token_ids=[stop] if i % 2 else [])
            assert core.add(SubmitRequest(f"r{i}", prompt, sp, 0.0), 0.0) == []
        if async_scheduling:
            kv.pipelined()
        else:
            kv.run_to_end()
        recomputes.append(core.swaps.num_recomputes)
        got: dict[str, list[int]] = {}
        for out in kv.outputs:
            assert out.error is None
            got.setdefault(out.request_id, []).extend(out.token_ids)
        return got

    sequential, pipelined = outputs(False), outputs(True)
    assert pipelined == sequential and len(sequential) == 6
    assert (recomputes[1] > 0) == (blocks == 6)  # the KV-dropped path ran where meant to
    assert all(len(v) == 4 for k, v in sequential.items() if int(k[1:]) % 2 and int(k[1:]) > 0)
