from fastserve.protocol.to_cache_manager import CacheSnapshot, JobCacheState
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner


def snap(jobs, free=0, total=20, host_free=20, batch=1):
    states = [JobCacheState(rid, i, loc, n, need, False) for i, (rid, loc, n, need) in enumerate(jobs)]
    return CacheSnapshot(1, free, total, host_free, 20, batch, states)


def test_offloads_coldest_first_when_under_watermark():
    planner = ProactiveSwapPlanner(watermark=0.1, lookahead_ticks=1)
    s = snap([("hot", "device", 5, 1), ("new", "none", 0, 3), ("c1", "device", 5, 1),
              ("c2", "device", 5, 1)], free=0, batch=2)
    plan = planner.plan(s)
    # demand 1 + 3, watermark 2 -> target 6 free: offload c2 (5), then c1 (5).
    assert plan.offload == ["c2", "c1"]
    assert plan.upload == []


def test_never_offloads_hot_jobs_and_uploads_in_order():
    planner = ProactiveSwapPlanner(watermark=0.0, lookahead_ticks=1)
    s = snap([("h1", "host", 4, 1), ("h2", "host", 4, 1), ("cold", "device", 4, 1)],
             free=6, batch=2)
    plan = planner.plan(s)
    assert "h1" not in plan.offload and "h2" not in plan.offload
    assert plan.offload == ["cold"]
    assert plan.upload == ["h1", "h2"]


def test_no_host_pool_means_no_plan():
    planner = ProactiveSwapPlanner()
    s = CacheSnapshot(1, 0, 10, 0, 0, 1, [JobCacheState("a", 0, "device", 10, 1, False)])
    plan = planner.plan(s)
    assert plan.offload == [] and plan.upload == []


def test_in_flight_jobs_are_not_offloaded():
    planner = ProactiveSwapPlanner(watermark=0.5, lookahead_ticks=1)
    s = snap([("a", "device", 2, 1), ("b", "device", 8, 1)], free=0, total=10, batch=1)
    s.jobs[1].in_flight = True
    assert planner.plan(s).offload == []
