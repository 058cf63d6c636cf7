"""The cache manager's directory, fed diffs, against the snapshot it replaced.

`snapshot_plan` is the planner as it was when the scheduler sent every job every tick
(the snapshot built by SwapBook.snapshot, planned by ProactiveSwapPlanner.plan): a random
run with sharing, memory pressure, copies and results that come back late, aborts and
recomputes must get the same plan from the directory at every tick, and the directory
must hold what a full look at the core would give.
"""

import math
import random

import pytest

from fastserve.protocol.codec import Codec
from fastserve.protocol.common import CopyDirection, KVLocation, SamplingParams
from fastserve.protocol.to_cache_manager import CacheUpdate, JobKV, KVPools
from fastserve.protocol.to_scheduler import SampledToken, StepResult, SubmitRequest, SwapDone
from fastserve.runtime.kv.allocator import KVBlockPool, blocks_for_tokens
from fastserve.runtime.kv.cache_directory import CacheDirectory, DirectoryOutOfSync
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner
from fastserve.runtime.sched.batching import BatchLimits
from fastserve.runtime.sched.cache_feed import CacheFeed
from fastserve.runtime.sched.mlfq import PlainMLFQ
from fastserve.runtime.sched.policy import FCFSPolicy
from fastserve.runtime.sched.scheduler_core import SchedulerCore
from fastserve.runtime.sched.swap_book import shared_prefix

BS = 4
_ON_DEVICE = (KVLocation.DEVICE, KVLocation.TO_DEVICE)


def snapshot_plan(core, order, watermark, lookahead):
    """(offload, upload) as the snapshot-fed planner decided them."""
    device, host = core.device, core.host
    jobs = []
    for job in order:
        need = blocks_for_tokens(job.num_tokens + 1, BS)
        need -= len(job.block_ids) if job.location in _ON_DEVICE else job.num_kept_blocks
        if job.location is KVLocation.DEVICE:
            movable = len(job.block_ids) - shared_prefix(job, device)
        else:
            movable = len(job.block_ids) - job.num_kept_blocks
        jobs.append((job.request_id, job.location.value, movable, max(need, 0), job.in_flight))
    offload, upload = [], []
    if host.num_blocks == 0:
        return offload, upload
    hot_n = max(1, core.limits.max_batch_jobs * lookahead)
    hot, cold = jobs[:hot_n], jobs[hot_n:]
    free, host_free = device.num_free, host.num_free
    demand = 0
    for _, loc, n, need, _ in hot:
        if loc == "host":
            demand += n + 1
        elif loc in ("none", "device"):
            demand += need
    target = min(device.num_blocks, demand + math.ceil(watermark * device.num_blocks))
    for rid, loc, n, _, in_flight in reversed(cold):
        if free >= target:
            break
        if loc != "device" or in_flight or n == 0 or host_free < n:
            continue
        offload.append(rid)
        free += n
        host_free -= n
    for rid, loc, n, _, _ in hot:
        if loc != "host":
            continue
        if free - (n + 1) < 0:
            break
        upload.append(rid)
        free -= n + 1
    return offload, upload


def full_view(core):
    """Every live job's entry, computed from scratch."""
    feed = CacheFeed(core.device, core.host, BS, core.limits.max_batch_jobs)
    for job in core.jobs.values():
        feed.touch(job)
    return {e.request_id: e for e in feed.update(0, [], core.jobs).changed}


def make_core(policy, device=40, host=60, batch=3):
    return SchedulerCore(policy, BatchLimits(batch, 24, BS, 1024, 4 * batch),
                         KVBlockPool(device), KVBlockPool(host, "host"), (2,))  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_directory_fed_diffs_plans_what_the_snapshot_did(seed):
    rng = random.Random(seed)
    policy = PlainMLFQ(base_quantum=0.004, starvation_threshold=0.3)  # demotions and promotions
    core = make_core(policy, device=rng.choice([24, 32]), host=rng.choice([16, 60]))
    planner = ProactiveSwapPlanner(watermark=0.3, lookahead_ticks=1)
    directory, codec = CacheDirectory(), Codec()
    systems = [[50 + i] * 8 for i in range(3)]  # shared prompt heads: two full blocks each
    results, copies = [], []  # ticks and copies the "workers" have not answered yet
    seen = {"offload": 0, "upload": 0, "plans": 0, "shared": 0}
    for step in range(500):
        now = step * 0.01
        if step < 300 and rng.random() < 0.35:
            prompt = rng.choice(systems) + [rng.randrange(3, 40) for _ in range(rng.randrange(0, 9))]
            sp = SamplingParams(max_tokens=rng.randrange(1, 40), ignore_eos=True)
            core.add(SubmitRequest(f"r{step}", prompt, sp, now), now)
        if core.jobs and rng.random() < 0.02:
            core.abort(rng.choice(list(core.jobs)), "abort")
        plan = core.schedule(now)
        expected = snapshot_plan(core, core.priority_order(now), 0.3, 1)
        directory.apply(codec.decode(codec.encode(core.cache_update())).message)
        got = planner.plan(directory)
        assert (got.offload, got.upload) == expected, f"tick {plan.tick}"
        assert directory.entries == full_view(core)
        assert [e.request_id for e in directory.ranked()] == [j.request_id for j in core._order]
        seen["plans"] += bool(got.offload or got.upload)
        seen["shared"] += any(e.shared_blocks for e in directory.entries.values())
        core.request_swaps(got)
        if plan.scheduled:
            results.append(plan)
        copies += [(c.request_id, CopyDirection.OFFLOAD, plan.tick) for c in plan.swap_out]
        copies += [(c.request_id, CopyDirection.UPLOAD, plan.tick) for c in plan.swap_in]
        if results and rng.random() < 0.7:  # results come back, sometimes a tick late
            done = results.pop(0)
            tokens = [SampledToken(s.request_id, 7, -0.1) for s in done.scheduled if s.sample]
            core.update(StepResult(done.tick, 0, tokens, 0.01), now)
        while copies and rng.random() < 0.6:
            rid, direction, tick = copies.pop(0)
            seen[direction.name.lower()] += 1
            core.swap_done(SwapDone(tick, 0, rid, direction, 0.001))
    assert seen["offload"] and seen["upload"] and seen["plans"] and seen["shared"], seen


def test_updates_carry_only_what_changed():
    core = make_core(FCFSPolicy(), device=200, host=0, batch=2)
    sp = SamplingParams(max_tokens=50, ignore_eos=True)
    for i in range(10):
        core.add(SubmitRequest(f"r{i}", list(range(10, 16)), sp, 0.0), 0.0)
    first = core.cache_update()
    assert first.seq == 1 and first.pools == KVPools(200, 0, BS, 2) and len(first.changed) == 10
    for _ in range(5):
        plan = core.schedule(0.0)
        update = core.cache_update()
        tokens = [SampledToken(s.request_id, 7, -0.1) for s in plan.scheduled]
        core.update(StepResult(plan.tick, 0, tokens, 0.01), 0.0)
    # FCFS keeps its order; only the two running jobs changed (in flight, one more token).
    assert update.pools is None and update.order is None and update.finished == []
    assert {e.request_id for e in update.changed} == {"r0", "r1"}
    assert all(e.in_flight and e.location is KVLocation.DEVICE for e in update.changed)
    core.abort("r5", "abort")
    update = core.cache_update()
    assert update.finished == ["r5"] and {e.request_id for e in update.changed} == {"r0", "r1"}


def test_directory_refuses_a_gap_and_a_first_update_without_pools():
    pools = KVPools(8, 8, BS, 1)
    entry = JobKV("a", KVLocation.NONE, 5, 0, 0, 0, False)
    d = CacheDirectory()
    with pytest.raises(DirectoryOutOfSync, match="without the pools"):
        d.apply(CacheUpdate(1, 1, 8, 8))
    d.apply(CacheUpdate(1, 1, 8, 8, pools, [entry], [], ["a"]))
    with pytest.raises(DirectoryOutOfSync, match="update 3 after update 1"):
        d.apply(CacheUpdate(3, 2, 8, 8))
    d.apply(CacheUpdate(2, 2, 7, 8, changed=[JobKV("b", KVLocation.NONE, 3, 0, 0, 0, False)]))
    assert d.order == ["a"] and [e.request_id for e in d.ranked()] == ["a"]  # b: no rank yet
    d.apply(CacheUpdate(3, 3, 8, 8, finished=["a"]))
    assert d.ranked() == [] and set(d.entries) == {"b"} and d.free_device_blocks == 8
