from fastserve.protocol.common import KVLocation
from fastserve.protocol.to_cache_manager import CacheUpdate, JobKV, KVPools
from fastserve.runtime.kv.cache_directory import CacheDirectory
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner


def entry(rid, loc, n, need):
    """A job that would move `n` blocks and needs `need` more device blocks (block size 1)."""
    location = KVLocation(loc)
    device = n if location is KVLocation.DEVICE else 0
    host = n if location is KVLocation.HOST else 0
    return JobKV(rid, location, device + need - 1, device, host, 0, False)


def directory(jobs, free=0, total=20, host_free=20, batch=1, host_total=20):
    d = CacheDirectory()
    changed = [entry(*j) for j in jobs]
    pools = KVPools(total, host_total, 1, batch)
    d.apply(CacheUpdate(1, 1, free, host_free, pools, changed, [], [j[0] for j in jobs]))
    return d


def test_offloads_coldest_first_when_under_watermark():
    planner = ProactiveSwapPlanner(watermark=0.1, lookahead_ticks=1)
    d = directory([("hot", "device", 5, 1), ("new", "none", 0, 3), ("c1", "device", 5, 1),
                   ("c2", "device", 5, 1)], free=0, batch=2)
    plan = planner.plan(d)
    # demand 1 + 3, watermark 2 -> target 6 free: offload c2 (5), then c1 (5).
    assert plan.offload == ["c2", "c1"]
    assert plan.upload == []


def test_never_offloads_hot_jobs_and_uploads_in_order():
    planner = ProactiveSwapPlanner(watermark=0.0, lookahead_ticks=1)
    d = directory([("h1", "host", 4, 1), ("h2", "host", 4, 1), ("cold", "device", 4, 1)],
                  free=6, batch=2)
    plan = planner.plan(d)
    assert "h1" not in plan.offload and "h2" not in plan.offload
    assert plan.offload == ["cold"]
    assert plan.upload == ["h1", "h2"]


def test_no_host_pool_means_no_plan():
    planner = ProactiveSwapPlanner()
    d = directory([("a", "device", 10, 1)], free=0, total=10, host_free=0, host_total=0)
    plan = planner.plan(d)
    assert plan.offload == [] and plan.upload == []


def test_in_flight_jobs_are_not_offloaded():
    planner = ProactiveSwapPlanner(watermark=0.5, lookahead_ticks=1)
    d = directory([("a", "device", 2, 1), ("b", "device", 8, 1)], free=0, total=10, batch=1)
    d.entries["b"].in_flight = True
    assert planner.plan(d).offload == []
