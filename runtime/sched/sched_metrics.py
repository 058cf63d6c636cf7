"""The scheduler's share of the metrics: what needs per-event data or the job table.

The frontend is the server's one Prometheus exporter: one port and one scrape target, and
nothing to clean up when the engine processes are replaced (prometheus_client's
multiprocess mode would need a shared directory of mmapped files, wiped at every engine
restart, for values that already reach the frontend in SchedulerStats). So the scheduler
accumulates here and ships cumulative snapshots; the frontend copies the latest one into
its registry (runtime/frontend/scheduler_metrics.py). Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Mapping

from fastserve.protocol.common import CopyDirection
from fastserve.protocol.to_frontend import HistogramCounts, PreemptionRecord
from fastserve.runtime.sched.job import Job, KVLocation

# Bucket bounds, shared with the exporter (only counts travel). A CPU copy of a few blocks
# takes ~0.1-1 ms, a GPU offload of a long context tens of ms; more is a stall to see.
SWAP_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# 16 KiB (a block of a tiny model) to 16 GiB (a long context of a large one), x4 apart.
SWAP_BYTES_BUCKETS = tuple(float(4**k * 2**14) for k in range(11))
# Waiting before the first run: milliseconds when idle, up to minutes under overload.
QUEUE_SECONDS_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
RECENT_PREEMPTIONS = 10  # the dashboard lists this many
_SWAPPED = (KVLocation.HOST, KVLocation.TO_HOST, KVLocation.TO_DEVICE)


class BucketCounts:
    """A histogram as counts per bucket (value <= bound, Prometheus' `le`) and a sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def snapshot(self) -> HistogramCounts:
        return HistogramCounts(list(self.counts), round(self.total, 6))


class SchedulerMetrics:
    """Counters and histograms fed by the actor: KV copies (SwapBook.on_done) and the job
    events it drains every tick (JobEvents: admitted, level changes, preempted)."""

    def __init__(self, kv_block_bytes: int = 0) -> None:
        self.kv_block_bytes = kv_block_bytes  # one block over every rank; 0: unknown
        self.swap_seconds = {d: BucketCounts(SWAP_SECONDS_BUCKETS) for d in CopyDirection}
        self.swap_bytes = {d: BucketCounts(SWAP_BYTES_BUCKETS) for d in CopyDirection}
        self.queue_seconds = BucketCounts(QUEUE_SECONDS_BUCKETS)
        self.demotions = 0
        self.promotions = 0
        self.recent_preemptions: deque[PreemptionRecord] = deque(maxlen=RECENT_PREEMPTIONS)

    def observe_swap(self, direction: CopyDirection, blocks: int, seconds: float) -> None:
        """A copy completed on every rank."""
        self.swap_seconds[direction].observe(seconds)
        if self.kv_block_bytes:  # without a block size, a bytes histogram would lie
            self.swap_bytes[direction].observe(float(blocks * self.kv_block_bytes))

    def on_event(self, event: str, fields: Mapping[str, object]) -> None:
        """One of JobEvents' events; the counts follow the logs that trace reads."""
        if event == "job_admitted":
            self.queue_seconds.observe(_number(fields.get("waited_s")))
        elif event == "job_level":
            if fields.get("change") == "demoted":
                self.demotions += 1
            else:
                self.promotions += 1
        elif event == "job_preempted":
            record = PreemptionRecord(
                str(fields.get("request_id")),
                int(_number(fields.get("tick"))),
                str(fields.get("location")),
            )
            self.recent_preemptions.append(record)


def job_states(jobs: Iterable[Job]) -> tuple[int, int, int, list[int]]:
    """(queued, running, swapped, jobs per level) of the unfinished jobs.

    Running: in the last batch or still executing (with pipeline parallelism a job can be
    in flight in an earlier tick). Swapped: KV on the host or moving. Queued: the rest,
    new jobs and those preempted with their KV still on the device."""
    queued = running = swapped = 0
    levels: list[int] = []
    for job in jobs:
        if job.in_flight or job.ran_last_tick:
            running += 1
        elif job.location in _SWAPPED:
            swapped += 1
        else:
            queued += 1
        level = max(0, job.level)
        if level >= len(levels):
            levels.extend([0] * (level + 1 - len(levels)))
        levels[level] += 1
    return queued, running, swapped, levels


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
