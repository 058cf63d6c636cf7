"""Issue 12's metrics: the scheduler's stats (states, levels, swap and queue histograms)
through the codec into the frontend's prometheus_client registry, under the names the
bench tooling reads."""

from __future__ import annotations

import itertools
import time

from prometheus_client.parser import text_string_to_metric_families

from fastserve.actors.scheduler import SchedulerActor
from fastserve.benchmarks.server_metrics import COUNTERS, parse_metrics
from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_frontend import HistogramCounts, SchedulerStats
from fastserve.protocol.to_scheduler import (
    SampledToken,
    StepResult,
    SubmitRequest,
    SwapDone,
    SwapPlan,
)
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.frontend.metrics import FrontendMetrics, RecentWindow
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.sched.batching import BatchLimits
from fastserve.runtime.sched.job import Job, KVLocation
from fastserve.runtime.sched.mlfq import PlainMLFQ
from fastserve.runtime.sched.sched_metrics import (
    SWAP_SECONDS_BUCKETS,
    BucketCounts,
    job_states,
)
from fastserve.runtime.sched.scheduler_core import SchedulerCore
from fastserve.runtime.transport import MemoryInbox, MemoryOutbox

BLOCK_BYTES = 1000


def test_bucket_counts_use_prometheus_le_and_keep_a_sum():
    hist = BucketCounts((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 7.0):
        hist.observe(value)
    snap = hist.snapshot()
    assert snap.counts == [2, 1, 1] and snap.total == 7.65  # 0.1 <= 0.1: first bucket


def test_job_states_split_running_swapped_queued_and_count_levels():
    sp = SamplingParams()
    jobs = [
        Job("run", [1], sp, 0.0, in_flight=True, level=0),
        Job("ran", [1], sp, 0.0, ran_last_tick=True, level=2),
        Job("host", [1], sp, 0.0, location=KVLocation.HOST, level=2),
        Job("moving", [1], sp, 0.0, location=KVLocation.TO_DEVICE, level=1),
        Job("new", [1], sp, 0.0),
    ]
    assert job_states(jobs) == (1, 2, 2, [2, 1, 2])


def test_recent_window_percentiles_forget_old_values():
    window = RecentWindow(window_s=10.0)
    for i in range(100):
        window.observe(float(i + 1), now=0.0)
    assert window.percentiles(now=5.0) == {"n": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0}
    window.observe(3.0, now=20.0)
    assert window.percentiles(now=20.0) == {"n": 1, "p50": 3.0, "p90": 3.0, "p99": 3.0}
    assert window.percentiles(now=40.0)["p50"] is None


def _result(plan: TickPlan) -> StepResult:
    tokens = [SampledToken(s.request_id, 7, -0.1) for s in plan.scheduled if s.sample]
    return StepResult(plan.tick, 0, tokens, 0.01)


async def test_scheduler_stats_carry_states_levels_preemptions_and_swaps():
    workers, front = MemoryInbox(), MemoryInbox()
    # q0 = 5 ms < one 10 ms tick: a job that ran is demoted and the other job preempts it.
    policy = PlainMLFQ(base_quantum=0.005, starvation_threshold=1e9)
    core = SchedulerCore(policy, BatchLimits(1, 64, 4, 1024), KVBlockPool(16),
                         KVBlockPool(16, "host"), (2,))  # fmt: skip
    ticks = itertools.count()
    actor = SchedulerActor(MemoryInbox(), MemoryOutbox(workers), MemoryOutbox(front), None, core,
                           clock=lambda: float(next(ticks)), kv_block_bytes=BLOCK_BYTES)  # fmt: skip
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    for rid in ("a", "b"):
        await actor.dispatch(SubmitRequest(rid, list(range(10, 16)), sp, time.time()))
    for _ in range(3):  # a, then b (a preempted and demoted), then a again
        await actor.step()
        await actor.dispatch(_result(workers.drain()[-1]))
    await actor.dispatch(SwapPlan(core.tick, offload=["b"]))
    await actor.step()
    plan = workers.drain()[-1]
    (copy,) = plan.swap_out
    await actor.dispatch(SwapDone(plan.tick, 0, "b", "out", 0.0003))
    await actor.dispatch(_result(plan))
    await actor.step()
    stats = [m for m in front.drain() if isinstance(m, SchedulerStats)][-1]  # through the codec
    assert stats.jobs == 2 and stats.swapped == 1 and stats.running + stats.queued == 1
    assert sum(stats.level_depth) == 2 and len(stats.level_depth) >= 2
    assert stats.demotions >= 2 and stats.preemptions >= 1
    assert [p.request_id for p in stats.recent_preemptions][:1] == ["a"]
    assert stats.recent_preemptions[0].location == "device"
    assert stats.offloads == 1 and stats.kv_block_bytes == BLOCK_BYTES
    assert sum(stats.offload_seconds.counts) == 1 and stats.offload_seconds.total == 0.0003
    assert stats.offload_bytes.total == len(copy.dst_block_ids) * BLOCK_BYTES
    assert sum(stats.upload_seconds.counts) == 0
    assert sum(stats.queue_seconds.counts) == 2  # both were admitted (first scheduled)


def _stats() -> SchedulerStats:
    counts = [0] * (len(SWAP_SECONDS_BUCKETS) + 1)
    counts[3] = 2
    return SchedulerStats(
        9, 3, 60, 100, 30, 50, 7, 2, 1, 0, 40.5, 0.25,
        queued=1, running=1, swapped=1, level_depth=[2, 0, 1], demotions=4, promotions=1,
        starvation_promotions=1, kv_block_bytes=BLOCK_BYTES,
        offload_seconds=HistogramCounts(counts, 0.0016),
    )  # fmt: skip


def test_exposition_is_valid_and_keeps_the_names_bench_tools_read():
    metrics = FrontendMetrics()
    assert "fastserve_scheduler_" not in metrics.render(0)  # nothing before the first stats
    metrics.scheduler = _stats()
    metrics.count_received(12)
    metrics.observe_first_token(0.3)
    metrics.observe_tokens(1, None)
    metrics.observe_tokens(2, 0.04)
    metrics.count_finished("stop", 1.5, 0.05)
    metrics.count_rejection(429)
    text = metrics.render(2)
    families = {f.name: f for f in text_string_to_metric_families(text)}  # parses = valid
    values = parse_metrics(text)
    # benchmarks/server_metrics.py, benchmarks/soak_checks.py and the e2e tests read these.
    for name in (*COUNTERS, "jobs", "free_device_blocks", "total_device_blocks",
                 "free_host_blocks", "total_host_blocks"):  # fmt: skip
        assert f"fastserve_scheduler_{name}" in values, name
    assert values["fastserve_scheduler_preemptions"] == 7
    assert values["fastserve_scheduler_job_preemptions_total"] == 7
    assert values['fastserve_scheduler_requests{state="swapped"}'] == 1
    assert values['fastserve_scheduler_queue_depth{level="2"}'] == 1
    assert values["fastserve_scheduler_job_demotions_total"] == 4
    assert values["fastserve_scheduler_job_promotions_total"] == 1
    assert values["fastserve_scheduler_starvation_promotions_total"] == 1
    assert values['fastserve_scheduler_kv_swaps_total{direction="offload"}'] == 2
    assert values['fastserve_scheduler_kv_used_blocks{tier="device"}'] == 40
    assert values['fastserve_scheduler_kv_total_blocks{tier="host"}'] == 50
    assert values['fastserve_scheduler_kv_swap_seconds_count{direction="offload"}'] == 2
    le = f'{{direction="offload",le="{SWAP_SECONDS_BUCKETS[3]}"}}'
    assert values["fastserve_scheduler_kv_swap_seconds_bucket" + le] == 2
    assert families["fastserve_scheduler_kv_swap_bytes"].type == "histogram"
    assert families["fastserve_scheduler_job_preemptions"].type == "counter"
    assert values["fastserve_frontend_requests_shed_total"] == 1
    assert values["fastserve_frontend_requests_running"] == 2
    assert values["fastserve_frontend_inter_token_latency_seconds_count"] == 1
    assert values["fastserve_frontend_time_per_output_token_seconds_count"] == 1
    assert values["fastserve_frontend_time_to_first_token_seconds_count"] == 1
    assert values["fastserve_frontend_job_completion_time_seconds_sum"] == 1.5
    assert values["fastserve_frontend_generation_tokens_total"] == 3
    assert values["fastserve_frontend_engine_restarts_total"] == 0
    assert not any(name.endswith("_created") for name in values)
    assert metrics.shed == 1 and metrics.received == 1 and metrics.prompt_tokens == 12


async def test_prefix_cache_hit_rate_and_cached_blocks_reach_the_exposition():
    workers, front = MemoryInbox(), MemoryInbox()
    core = SchedulerCore(PlainMLFQ(), BatchLimits(4, 64, 4, 1024), KVBlockPool(16),
                         KVBlockPool(16, "host"), (2,))  # fmt: skip
    actor = SchedulerActor(MemoryInbox(), MemoryOutbox(workers), MemoryOutbox(front), None, core)
    sp = SamplingParams(max_tokens=2, ignore_eos=True)
    for rid in ("a", "b"):  # b arrives after a's prefill: 8 of its 10 tokens are cached
        await actor.dispatch(SubmitRequest(rid, list(range(10, 20)), sp, time.time()))
        await actor.step()
        await actor.dispatch(_result(workers.drain()[-1]))
    while core.jobs:
        await actor.step()
        await actor.dispatch(_result(workers.drain()[-1]))
    await actor.step()
    stats = [m for m in front.drain() if isinstance(m, SchedulerStats)][-1]  # through the codec
    assert (stats.prefix_cache_queried_tokens, stats.prefix_cache_hit_tokens) == (20, 8)
    assert stats.cached_device_blocks == 2 and stats.cached_host_blocks == 0
    metrics = FrontendMetrics()
    metrics.scheduler = stats
    text = metrics.render(0)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    values = parse_metrics(text)
    s = "fastserve_scheduler_"
    assert values[s + "prefix_cache_hit_rate"] == 0.4
    assert values[s + "prefix_cache_hit_tokens_total"] == 8
    assert values[s + "prefix_cache_queried_tokens_total"] == 20
    assert values[s + "prefix_cache_evictions_total"] == 0
    assert values[s + 'kv_cached_blocks{tier="device"}'] == 2
    assert values[s + 'kv_cached_blocks{tier="host"}'] == 0
    assert families[s + "prefix_cache_hit_tokens"].type == "counter"
