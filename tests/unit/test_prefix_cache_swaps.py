"""Offload and upload with shared prefix-cache blocks (tests/fake_kv.py checks what every
job reads): only a job's own blocks move, shared ones stay on the device held by every
owner, a job finishing on the host frees both pools, and a random mix of sharing,
swapping and aborts leaves every job correct and nothing leaked."""

import random

from fastserve.protocol.to_scheduler import SwapPlan
from fastserve.runtime.kv.cache_directory import movable_blocks
from fastserve.runtime.sched.job import KVLocation
from fastserve.runtime.sched.mlfq import SkipJoinMLFQ
from tests.fake_kv import COST, PROMPT, FakeKV, make_core, next_token, submit


def shared_pair(core, kv):
    """a and b share PROMPT's two full blocks, both decoding."""
    submit(core, "a", PROMPT, max_tokens=12)
    kv.tick()
    submit(core, "b", PROMPT, max_tokens=12)
    kv.tick()
    return core.jobs["a"], core.jobs["b"]


def test_offload_moves_only_unshared_blocks_and_every_owner_stays_correct():
    core = make_core(blocks=16, host=16)
    kv = FakeKV(core)
    a, b = shared_pair(core, kv)
    shared = b.block_ids[:2]
    own = b.block_ids[2:]
    assert movable_blocks(kv.view().ranked()[1]) == len(own)  # what an offload would move
    core.request_swaps(SwapPlan(0, offload=["b"]))
    plan = kv.tick()  # a runs, reading the shared blocks, in the tick that offloads b
    [copy] = plan.swap_out
    assert copy.src_block_ids == own and copy.keep_blocks == 2
    assert [s.request_id for s in plan.scheduled] == ["a"]
    assert b.location is KVLocation.HOST and b.block_ids[:2] == shared
    assert [core.device.refcount(x) for x in shared] == [2, 2]  # b still holds them
    for _ in range(3):
        kv.tick()  # a decodes on; b waits on the host
    core.request_swaps(SwapPlan(0, upload=["b"]))
    plan = kv.tick()
    [copy] = plan.swap_in
    assert copy.keep_blocks == 2 and len(copy.src_block_ids) == len(own)
    assert b.location is KVLocation.DEVICE and b.block_ids[:2] == shared
    assert kv.table.jobs["b"].block_table == b.block_ids  # the worker's table agrees
    kv.run_to_end()
    # Every token at its own position: neither job lost or misplaced any KV.
    for rid in "ab":
        got = [t for o in kv.outputs if o.request_id == rid for t in o.token_ids]
        assert got == [next_token(rid, p) for p in range(10, 22)]
    assert core.device.num_used == 0 and core.host.num_free == 16


def test_finishing_on_the_host_frees_the_kept_device_blocks_too():
    core = make_core(blocks=16, host=16)
    kv = FakeKV(core)
    a, b = shared_pair(core, kv)
    core.request_swaps(SwapPlan(0, offload=["b"]))
    kv.tick()
    core.abort("a", "abort")
    assert b.location is KVLocation.HOST
    assert [core.device.refcount(x) for x in b.block_ids[:2]] == [1, 1]  # pinned by b alone
    core.abort("b", "abort")
    assert core.device.num_used == 0 and core.host.num_used == 0
    # The prompt's blocks (and a's third, full by now) stay cached for later.
    assert len(core.device.cached_prefix(b.block_hashes[:2])) == 2
    assert core.device.num_cached == core.device.num_cached_free == 3


def test_a_job_whose_blocks_are_all_shared_is_not_offloaded():
    core = make_core(blocks=16, host=16, jobs=1)
    kv = FakeKV(core)
    submit(core, "a", PROMPT[:7], max_tokens=8)
    kv.tick()
    kv.tick()  # a has computed 8 tokens: two full blocks, both registered
    a = core.jobs["a"]
    first = kv.table.jobs["a"].token_ids[:8]
    submit(core, "b", first + [70], priority=-1)  # runs alone next tick (one job per tick)
    kv.tick()
    assert core.jobs["b"].block_ids[:2] == a.block_ids[:2] and len(a.block_ids) == 2
    moves = {e.request_id: movable_blocks(e) for e in kv.view().ranked()}
    assert moves == {"a": 0, "b": 1}
    core.request_swaps(SwapPlan(0, offload=["a"]))
    plan = kv.tick()
    assert plan.swap_out == [] and a.location is KVLocation.DEVICE


def test_random_sharing_swapping_and_aborts_keep_every_job_correct():
    rng = random.Random(7)
    core = make_core(blocks=24, host=40, jobs=4, tokens=16, policy=SkipJoinMLFQ(COST))
    kv = FakeKV(core)
    kv.outputs = []
    systems = [list(range(200 + 20 * i, 212 + 20 * i)) for i in range(2)]
    for step in range(400):
        if step < 60 and rng.random() < 0.3:
            user = [rng.randrange(300, 310) for _ in range(rng.randrange(1, 9))]
            prompt = rng.choice(systems) + user
            submit(core, f"r{step}", prompt, max_tokens=rng.randrange(1, 12), now=float(step))
        jobs = list(core.jobs.values())
        if jobs and rng.random() < 0.3:
            job = rng.choice(jobs)
            core.request_swaps(SwapPlan(0, offload=[job.request_id], upload=[]))
        if jobs and rng.random() < 0.4:
            core.request_swaps(SwapPlan(0, upload=[rng.choice(jobs).request_id]))
        if jobs and rng.random() < 0.03:
            core.abort(rng.choice(jobs).request_id, "abort")
        kv.tick(float(step))
        if step > 60 and not core.jobs:
            break
    assert not core.jobs
    assert core.swaps.num_offloads > 0 and core.prefix.hit_tokens > 0
    assert core.device.num_used == 0 and core.host.num_used == 0
