"""Prefix caching in SchedulerCore, driven by synthetic step results (tests/fake_kv.py
checks what every job reads): hits skip the cached prefill, the last token is always
recomputed, cached blocks outlive their job until memory is needed, the next turn finds
the previous one, the policies price only the uncached prefill."""

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.batching import pick_batch
from fastserve.runtime.sched.gittins import GittinsPolicy
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.mlfq import SkipJoinMLFQ
from tests.fake_kv import BS, COST, PROMPT, FakeKV, make_core, submit


def test_second_job_with_the_same_prompt_prefills_only_the_uncached_tail():
    core = make_core()
    kv = FakeKV(core)
    submit(core, "a", PROMPT)
    kv.tick()  # a's prompt: 10 tokens, its two full blocks registered after the tick
    assert core.device.num_cached == 2
    submit(core, "b", PROMPT)
    assert core.jobs["b"].cached_tokens == 8 and core.jobs["b"].prefill_left == 2
    plan = kv.tick()
    [new_b] = [n for n in plan.new_jobs if n.request_id == "b"]
    [sched_b] = [s for s in plan.scheduled if s.request_id == "b"]
    a, b = core.jobs["a"], core.jobs["b"]
    assert new_b.num_cached == 8 and sched_b.num_new_tokens == 2 and sched_b.sample
    assert sched_b.new_block_ids[:2] == a.block_ids[:2] != b.block_ids[2:]
    assert [core.device.refcount(x) for x in b.block_ids] == [2, 2, 1]
    kv.run_to_end()
    assert core.prefix.queried_tokens == 20 and core.prefix.hit_tokens == 8
    assert core.device.num_used == 0 and core.device.num_free == 64


def test_a_block_aligned_repeat_still_recomputes_its_last_token():
    core = make_core()
    kv = FakeKV(core)
    submit(core, "a", PROMPT[:8])
    kv.tick()
    submit(core, "b", PROMPT[:8])
    plan = kv.tick()
    [sched_b] = [s for s in plan.scheduled if s.request_id == "b"]
    assert sched_b.num_new_tokens == 4 and sched_b.sample  # one block cached, not two


def test_caching_off_prefills_everything_and_caches_nothing():
    core = make_core(caching=False)
    kv = FakeKV(core)
    submit(core, "a", PROMPT)
    kv.tick()
    submit(core, "b", PROMPT)
    plan = kv.tick()
    assert [s.num_new_tokens for s in plan.scheduled if s.request_id == "b"] == [10]
    assert core.device.num_cached == 0 and core.prefix.queried_tokens == 0


def test_cached_blocks_outlive_their_job_until_memory_is_needed():
    core = make_core(blocks=8)
    kv = FakeKV(core)
    submit(core, "a", PROMPT, max_tokens=2)
    kv.run_to_end()
    assert core.device.num_used == 0 and core.device.num_cached == 2  # 11 tokens computed
    submit(core, "b", PROMPT, max_tokens=2)
    kv.run_to_end()
    assert core.prefix.hit_tokens == 8
    # c needs the whole pool: both cached blocks are evicted (never-used blocks go first).
    submit(core, "c", list(range(50, 78)), max_tokens=2)
    kv.run_to_end()
    assert core.device.num_evictions == 2
    submit(core, "d", PROMPT, max_tokens=2)
    assert core.jobs["d"].cached_tokens == 0


def test_the_next_turn_finds_the_previous_answer():
    core = make_core()
    kv = FakeKV(core)
    submit(core, "t1", PROMPT[:6], max_tokens=6)
    kv.run_to_end()
    answer = [t for o in kv.outputs for t in o.token_ids]
    assert len(answer) == 6
    # 6 prompt + 5 fed output tokens computed: blocks 0-1 (tokens 0-7) hold 2 answer tokens.
    turn2 = PROMPT[:6] + answer + [60, 61, 62]
    submit(core, "t2", turn2)
    assert core.jobs["t2"].cached_tokens == 8 > 6


def test_the_policies_price_only_the_uncached_prefill():
    core = make_core(policy=SkipJoinMLFQ(COST))
    kv = FakeKV(core)
    prompt = list(range(40))
    submit(core, "a", prompt)
    kv.run_to_end()
    submit(core, "cached", prompt)
    submit(core, "fresh", list(range(100, 140)))
    cached, fresh = core.jobs["cached"], core.jobs["fresh"]
    assert cached.prefill_left == 4 and fresh.prefill_left == 40
    assert cached.level == 0 < fresh.level  # skip-join: the cached prompt is a short job
    gittins = GittinsPolicy(COST)
    for job in (cached, fresh):
        gittins.add(job, 0.0)
    assert gittins.prefill_units(cached) < gittins.prefill_units(fresh)
    assert gittins.index(cached) > gittins.index(fresh)
    assert [j.request_id for j in gittins.priority_order(0.0)] == ["cached", "fresh"]


def test_a_block_computed_twice_at_once_stays_private_and_ends_the_chain():
    core = make_core()
    kv = FakeKV(core)
    submit(core, "a", PROMPT, max_tokens=4)
    submit(core, "b", PROMPT, max_tokens=4)
    kv.tick()  # both prefill the same prompt in one batch: a's copies are registered
    kv.tick()
    kv.tick()  # 12 tokens computed: three full blocks each
    a, b = core.jobs["a"], core.jobs["b"]
    assert a.num_registered == 3 and b.num_registered == 0
    # b's third block (prompt tokens 8-9, b's answer 10-11) is full now, but stays out of
    # the index: blocks that several jobs hold must be a leading run of every holder's
    # table (what an offload keeps on the device).
    b_tokens = kv.table.jobs["b"].token_ids
    submit(core, "c", b_tokens[:12] + [90])
    assert core.jobs["c"].cached_tokens == 8


def test_taking_cached_free_blocks_counts_against_the_blocks_left():
    job = Job("j", PROMPT, SamplingParams(max_tokens=1), 0.0)
    kwargs = dict(max_jobs=4, max_tokens=64, block_size=BS, prefix=lambda j: (8, 2))
    # 8 tokens cached in 2 cached free blocks; 11 tokens (prompt + 1) need 3 blocks.
    [entry] = pick_batch([job], free_blocks=3, **kwargs)
    assert (entry.num_new_tokens, entry.new_blocks, entry.cached_tokens) == (2, 1, 8)
    assert entry.samples
    assert pick_batch([job], free_blocks=2, **kwargs) == []
    # Held by another job, the same blocks cost nothing.
    kwargs["prefix"] = lambda j: (8, 0)
    assert len(pick_batch([job], free_blocks=1, **kwargs)) == 1
