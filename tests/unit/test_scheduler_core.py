"""SchedulerCore with FCFS, driven by synthetic step results (no engine, no processes)."""

from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import (
    SampledToken,
    StepFailed,
    StepResult,
    SubmitRequest,
    SwapDone,
    SwapPlan,
)
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.sched.batching import BatchLimits
from fastserve.runtime.sched.job import KVLocation
from fastserve.runtime.sched.policy import FCFSPolicy
from fastserve.runtime.sched.scheduler_core import SchedulerCore

EOS = 2


def make_core(blocks=64, host=0, jobs=8, tokens=64, block_size=4) -> SchedulerCore:
    return SchedulerCore(FCFSPolicy(), BatchLimits(jobs, tokens, block_size, 1024),
                         KVBlockPool(blocks), KVBlockPool(host, "host"), (EOS,))


def submit(core, rid, prompt_len=5, **sampling):
    sp = SamplingParams(**{"max_tokens": 4, **sampling})
    return core.add(SubmitRequest(rid, list(range(10, 10 + prompt_len)), sp, 0.0), 0.0)


def result_for(plan: TickPlan, token=7, tokens=None) -> StepResult:
    toks = tokens or {}
    return StepResult(plan.tick, 0, [SampledToken(s.request_id, toks.get(s.request_id, token), -0.1)
                                     for s in plan.scheduled if s.sample], 0.01)


def run_to_end(core, token=7, limit=100):
    outputs = []
    for _ in range(limit):
        if not core.jobs:
            break
        plan = core.schedule(0.0)
        outputs += core.update(result_for(plan, token), 0.0)
    return outputs


def test_prefill_then_decode_sends_full_data_once_then_diffs():
    core = make_core()
    submit(core, "a", prompt_len=6)
    p1 = core.schedule(0.0)
    assert [j.request_id for j in p1.new_jobs] == ["a"]
    s = p1.scheduled[0]
    assert s.num_new_tokens == 6 and s.sample and len(s.new_block_ids) == 2  # 6+1 tokens, bs 4
    out = core.update(result_for(p1, token=11), 0.0)
    assert out[0].token_ids == [11] and out[0].finish_reason is None
    p2 = core.schedule(0.0)
    assert p2.new_jobs == []
    assert p2.scheduled[0].num_new_tokens == 1 and p2.scheduled[0].append_token_ids == [11]


def test_length_and_eos_finish_and_free_blocks():
    core = make_core(blocks=16)
    submit(core, "len", max_tokens=3)
    submit(core, "eos", max_tokens=10)
    outs, released = [], []
    for _ in range(10):
        if not core.jobs:
            break
        plan = core.schedule(0.0)
        released += plan.released
        outs += core.update(result_for(plan, tokens={"eos": EOS}), 0.0)
    finished = {o.request_id: o.finish_reason for o in outs if o.finish_reason}
    assert finished == {"len": "length", "eos": "stop"}
    assert core.device.num_free == 16
    released += core.schedule(0.0).released
    assert sorted(released) == ["eos", "len"]


def test_min_tokens_and_ignore_eos_and_stop_ids():
    core = make_core()
    submit(core, "m", max_tokens=5, min_tokens=2)
    submit(core, "i", max_tokens=3, ignore_eos=True)
    submit(core, "s", max_tokens=5, stop_token_ids=[99])
    tokens = {"m": EOS, "i": EOS, "s": 99}
    lengths: dict[str, int] = {}
    for _ in range(10):
        if not core.jobs:
            break
        plan = core.schedule(0.0)
        for o in core.update(result_for(plan, tokens=tokens), 0.0):
            lengths[o.request_id] = lengths.get(o.request_id, 0) + len(o.token_ids)
    assert lengths == {"m": 2, "i": 3, "s": 1}


def test_fcfs_respects_batch_job_limit_and_order():
    core = make_core(jobs=2)
    for rid in "abc":
        submit(core, rid)
    plan = core.schedule(0.0)
    assert [s.request_id for s in plan.scheduled] == ["a", "b"]


def test_chunked_prefill_under_token_budget():
    core = make_core(tokens=8, block_size=4)
    submit(core, "long", prompt_len=20)
    p1 = core.schedule(0.0)
    assert p1.scheduled[0].num_new_tokens == 8 and not p1.scheduled[0].sample
    assert core.update(result_for(p1), 0.0) == []
    p2 = core.schedule(0.0)
    assert p2.scheduled[0].num_new_tokens == 8
    core.update(result_for(p2), 0.0)
    p3 = core.schedule(0.0)
    assert p3.scheduled[0].num_new_tokens == 4 and p3.scheduled[0].sample


def test_new_job_waits_for_admission_when_blocks_are_short():
    core = make_core(blocks=4, block_size=4)
    submit(core, "a", prompt_len=8, max_tokens=4)  # needs 3 blocks for prompt+1
    submit(core, "b", prompt_len=8, max_tokens=4)
    plan = core.schedule(0.0)
    assert [s.request_id for s in plan.scheduled] == ["a"]
    outs = core.update(result_for(plan), 0.0) + run_to_end(core)
    assert {o.request_id for o in outs if o.finish_reason == "length"} == {"a", "b"}
    assert core.device.num_free == 4


def test_request_larger_than_pool_fails_clearly():
    core = make_core(blocks=2, block_size=4)
    out = submit(core, "big", prompt_len=20)
    assert out[0].finish_reason == "error" and "pool has 2" in out[0].error
    assert not core.jobs


def test_abort_in_flight_frees_after_tick():
    core = make_core(blocks=8)
    submit(core, "a")
    plan = core.schedule(0.0)
    assert core.abort("a", "abort") == []
    outs = core.update(result_for(plan), 0.0)
    assert [(o.request_id, o.finish_reason) for o in outs] == [("a", "abort")]
    assert core.device.num_free == 8 and not core.jobs


def test_abort_waiting_job_is_immediate():
    core = make_core()
    submit(core, "w")
    outs = core.abort("w", "abort")
    assert outs[0].finish_reason == "abort" and not core.jobs
    assert core.abort("unknown", "abort") == []


def test_failed_tick_ends_its_jobs_with_error():
    core = make_core(blocks=8)
    submit(core, "a")
    plan = core.schedule(0.0)
    outs = core.fail_tick(StepFailed(plan.tick, 0, ["a"], "boom"))
    assert outs[0].finish_reason == "error" and outs[0].error == "boom"
    assert core.device.num_free == 8


def test_offload_and_upload_move_blocks_between_pools():
    core = make_core(blocks=8, host=8, block_size=4)
    submit(core, "a", prompt_len=6, max_tokens=8)
    core.update(result_for(core.schedule(0.0)), 0.0)
    dev_blocks = list(core.jobs["a"].block_ids)
    core.request_swaps(SwapPlan(1, offload=["a"]))
    plan = core.schedule(0.0)
    assert plan.scheduled == [] and plan.swap_out[0].src_block_ids == dev_blocks
    assert core.jobs["a"].location is KVLocation.TO_HOST
    core.swap_done(SwapDone(plan.tick, 0, "a", "out", 0.001))
    assert core.jobs["a"].location is KVLocation.HOST and core.device.num_free == 8
    core.request_swaps(SwapPlan(2, upload=["a"]))
    plan = core.schedule(0.0)
    assert plan.swap_in and plan.scheduled == []
    core.swap_done(SwapDone(plan.tick, 0, "a", "in", 0.001))
    assert core.jobs["a"].location is KVLocation.DEVICE and core.host.num_free == 8
    plan = core.schedule(0.0)
    assert plan.scheduled[0].request_id == "a" and plan.scheduled[0].new_block_ids == []


def test_reactive_offload_when_nothing_can_run():
    # Two jobs each hold blocks; the pool is then full and the first needs a new block.
    core = make_core(blocks=4, host=8, block_size=4, jobs=2)
    submit(core, "a", prompt_len=7, max_tokens=8)
    submit(core, "b", prompt_len=7, max_tokens=8)
    # Both prefill into 2 blocks each; two ticks later both need a third block: deadlock
    # unless the least urgent job (b) is offloaded.
    outs = run_to_end_with_swaps(core)
    assert {o.request_id for o in outs if o.finish_reason == "length"} == {"a", "b"}
    assert core.device.num_free == 4 and core.host.num_free == 8
    assert core.swaps.num_offloads >= 1 and core.swaps.num_uploads == core.swaps.num_offloads


def run_to_end_with_swaps(core, limit=200):
    outs = []
    for _ in range(limit):
        if not core.jobs:
            break
        plan = core.schedule(0.0)
        for c in plan.swap_out:
            outs += core.swap_done(SwapDone(plan.tick, 0, c.request_id, "out", 0.0))
        for c in plan.swap_in:
            outs += core.swap_done(SwapDone(plan.tick, 0, c.request_id, "in", 0.0))
        outs += core.update(result_for(plan), 0.0)
    return outs


def test_recompute_when_no_host_pool_is_logged_and_correct():
    core = make_core(blocks=5, host=0, block_size=4, jobs=2)
    submit(core, "a", prompt_len=7, max_tokens=8)
    submit(core, "b", prompt_len=7, max_tokens=8)
    outs = run_to_end_with_swaps(core)
    lengths: dict[str, int] = {}
    for o in outs:
        lengths[o.request_id] = lengths.get(o.request_id, 0) + len(o.token_ids)
    assert lengths == {"a": 8, "b": 8}
    assert core.swaps.num_recomputes >= 1
    assert core.device.num_free == 5
