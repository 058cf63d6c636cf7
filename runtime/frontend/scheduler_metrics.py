"""The scheduler's metrics in the frontend's Prometheus registry.

The frontend is the one exporter (see runtime/sched/sched_metrics.py for why): a custom
collector turns the latest SchedulerStats message into metric families at scrape time,
as exporters that proxy another process's state do. Nothing is exported before the first
message arrives, nor while the engine restarts (a dead scheduler's values are not news);
counters restart from 0 with a new engine generation, which Prometheus reads as a reset.

Legacy series: `fastserve_scheduler_<field>` of the original SchedulerStats fields, bare
(no `_total`), are still served as untyped aliases because benchmarks/server_metrics.py,
benchmarks/soak_checks.py and the tests read them by those names. prometheus_client names
a counter family without `_total`, so the conventional counters take distinct names
(`job_preemptions_total`, `kv_swaps_total`, ...) rather than collide with the aliases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fastserve.protocol.to_frontend import HistogramCounts, SchedulerStats
from fastserve.runtime.sched.sched_metrics import (
    QUEUE_SECONDS_BUCKETS,
    SWAP_BYTES_BUCKETS,
    SWAP_SECONDS_BUCKETS,
)

_S = "fastserve_scheduler_"
# Original SchedulerStats fields kept under their old bare names (see the module doc).
_LEGACY_GAUGES = {
    "tick": "Last tick planned.",
    "jobs": "Unfinished jobs (running, preempted, waiting).",
    "free_device_blocks": "Device KV blocks free.",
    "total_device_blocks": "Device KV pool size in blocks.",
    "free_host_blocks": "Host KV blocks free.",
    "total_host_blocks": "Host KV pool size in blocks.",
}
_LEGACY_COUNTERS = {
    "preemptions": "job_preemptions_total",
    "offloads": 'kv_swaps_total{direction="offload"}',
    "uploads": 'kv_swaps_total{direction="upload"}',
    "recomputes": "kv_recomputes_total",
    "busy_seconds": "worker_busy_seconds_total",
    "swap_wait_seconds": "worker_swap_wait_seconds_total",
}
_DIRECTIONS = (("offload", "offload"), ("upload", "upload"))  # (label, field prefix)


class SchedulerCollector(Collector):
    """Collects from `source()`, the latest SchedulerStats (None: nothing to export)."""

    def __init__(self, source: Callable[[], SchedulerStats | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats = self._source()
        if stats is None:
            return
        yield from _states(stats)
        yield from _kv(stats)
        yield from _prefix_cache(stats)
        yield from _counters(stats)
        yield from _histograms(stats)
        yield from _legacy(stats)


def _states(s: SchedulerStats) -> Iterator[Metric]:
    requests = GaugeMetricFamily(
        _S + "requests", "Unfinished jobs by state (queued, running, swapped).", labels=["state"]
    )
    for state in ("queued", "running", "swapped"):
        requests.add_metric([state], getattr(s, state))
    yield requests
    depth = GaugeMetricFamily(
        _S + "queue_depth", "Unfinished jobs per policy level (0 most urgent).", labels=["level"]
    )
    for level, n in enumerate(s.level_depth):
        depth.add_metric([str(level)], n)
    yield depth


def _kv(s: SchedulerStats) -> Iterator[Metric]:
    used = GaugeMetricFamily(_S + "kv_used_blocks", "KV blocks in use, by tier.", labels=["tier"])
    total = GaugeMetricFamily(_S + "kv_total_blocks", "KV pool size, by tier.", labels=["tier"])
    for tier in ("device", "host"):
        size = getattr(s, f"total_{tier}_blocks")
        used.add_metric([tier], size - getattr(s, f"free_{tier}_blocks"))
        total.add_metric([tier], size)
    yield used
    yield total
    yield GaugeMetricFamily(
        _S + "kv_block_bytes", "Bytes of one KV block over every rank (0: unknown).",
        value=s.kv_block_bytes,
    )  # fmt: skip
    cached = GaugeMetricFamily(
        _S + "kv_cached_blocks",
        "KV blocks holding content-addressed (prefix-cache) KV, held or free, by tier.",
        labels=["tier"],
    )
    cached.add_metric(["device"], s.cached_device_blocks)
    cached.add_metric(["host"], s.cached_host_blocks)
    yield cached


def _prefix_cache(s: SchedulerStats) -> Iterator[Metric]:
    queried, hit = s.prefix_cache_queried_tokens, s.prefix_cache_hit_tokens
    yield CounterMetricFamily(
        _S + "prefix_cache_queried_tokens", "Tokens of jobs started, looked up in the prefix cache.",
        value=queried,
    )  # fmt: skip
    yield CounterMetricFamily(
        _S + "prefix_cache_hit_tokens", "Of those, tokens the prefix cache held (not prefilled).",
        value=hit,
    )  # fmt: skip
    yield GaugeMetricFamily(
        _S + "prefix_cache_hit_rate", "Prefix-cache tokens hit / tokens queried, since start.",
        value=hit / queried if queried else 0.0,
    )  # fmt: skip
    yield CounterMetricFamily(
        _S + "prefix_cache_evictions", "Cached free device blocks reclaimed for new KV.",
        value=s.prefix_cache_evictions,
    )  # fmt: skip


def _counters(s: SchedulerStats) -> Iterator[Metric]:
    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(_S + name, doc, value=value)

    yield counter("job_preemptions", "Jobs left out of a batch after running.", s.preemptions)
    yield counter("job_demotions", "Job level changes to a less urgent level.", s.demotions)
    yield counter("job_promotions", "Job level changes to a more urgent level.", s.promotions)
    yield counter(
        "starvation_promotions", "Jobs the policy promoted for starving.", s.starvation_promotions
    )
    swaps = CounterMetricFamily(_S + "kv_swaps", "Completed KV moves.", labels=["direction"])
    swaps.add_metric(["offload"], s.offloads)
    swaps.add_metric(["upload"], s.uploads)
    yield swaps
    yield counter("kv_recomputes", "Jobs whose KV was dropped to recompute.", s.recomputes)
    yield counter("worker_busy_seconds", "Worker forward time, summed.", s.busy_seconds)
    yield counter("steps_ahead", "Job steps built before the previous result.", s.steps_ahead)
    yield counter(
        "steps_wasted", "Steps built ahead for jobs that ended before them.", s.steps_wasted
    )
    yield counter(
        "worker_swap_wait_seconds", "Forward time spent waiting for KV copies.",
        s.swap_wait_seconds,
    )  # fmt: skip


def _histograms(s: SchedulerStats) -> Iterator[Metric]:
    seconds = HistogramMetricFamily(
        _S + "kv_swap_seconds", "KV copy time on the slowest rank.", labels=["direction"]
    )
    size = HistogramMetricFamily(
        _S + "kv_swap_bytes", "KV bytes per copy, over every rank.", labels=["direction"]
    )
    for label, prefix in _DIRECTIONS:
        _add(seconds, [label], getattr(s, f"{prefix}_seconds"), SWAP_SECONDS_BUCKETS)
        _add(size, [label], getattr(s, f"{prefix}_bytes"), SWAP_BYTES_BUCKETS)
    yield seconds
    yield size
    queue = HistogramMetricFamily(_S + "queue_time_seconds", "Arrival to first scheduled.")
    _add(queue, [], s.queue_seconds, QUEUE_SECONDS_BUCKETS)
    yield queue


def _add(
    family: HistogramMetricFamily,
    labels: list[str],
    hist: HistogramCounts,
    bounds: tuple[float, ...],
) -> None:
    """Per-bucket counts -> Prometheus' cumulative `le` buckets (+Inf last)."""
    counts = hist.counts if len(hist.counts) == len(bounds) + 1 else [0] * (len(bounds) + 1)
    buckets, running = [], 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        running += n
        buckets.append((floatToGoString(bound), running))
    family.add_metric(labels, buckets, hist.total)


def _legacy(s: SchedulerStats) -> Iterator[Metric]:
    for name, doc in _LEGACY_GAUGES.items():
        yield GaugeMetricFamily(_S + name, doc, value=getattr(s, name))
    for name, conventional in _LEGACY_COUNTERS.items():
        yield UnknownMetricFamily(
            _S + name, f"Deprecated alias of {_S}{conventional}.", value=getattr(s, name)
        )
