"""Prometheus text exposition of the frontend's counters and latency histograms.

Hand-written (a few dozen lines) rather than a dependency: the frontend only needs counters,
one gauge and cumulative histograms.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import fields

from fastserve.protocol.to_frontend import SchedulerStats

_PREFIX = "fastserve_frontend_"
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JCT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)  # last slot: above every bound (+Inf)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self) -> list[str]:
        full = _PREFIX + self.name
        lines = [f"# HELP {full} {self.help}", f"# TYPE {full} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            lines.append(f'{full}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{full}_bucket{{le="+Inf"}} {self.n}')
        lines.append(f"{full}_sum {self.total}")
        lines.append(f"{full}_count {self.n}")
        return lines


class FrontendMetrics:
    """Counts kept by the service; rendered on GET /metrics."""

    def __init__(self) -> None:
        self.received = 0  # requests accepted and submitted to the scheduler
        self.rejected = 0  # requests refused by validation (4xx)
        self.finished: Counter[str] = Counter()  # finish reason -> requests
        self.failed = 0  # requests that ended with a server error
        self.shed = 0  # requests refused by admission control (429), also in `rejected`
        self.internal_errors = 0  # handler bugs answered with a generic 500: should stay 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram(
            "time_to_first_token_seconds", "Arrival to first token.", TTFT_BUCKETS
        )
        self.jct = Histogram("job_completion_time_seconds", "Arrival to last token.", JCT_BUCKETS)
        self.scheduler: SchedulerStats | None = None  # latest gauges from the scheduler
        self.engine_restarts = 0  # new generations of engine processes that became ready
        self.engine_restarting = False  # the engine is down and a new one is starting

    def render(self, running: int) -> str:
        lines: list[str] = []
        _scalar(lines, "requests_running", "gauge", "Requests in flight.", running)
        _scalar(lines, "requests_received_total", "counter", "Requests submitted.", self.received)
        _scalar(lines, "requests_rejected_total", "counter", "Requests refused.", self.rejected)
        _scalar(lines, "requests_failed_total", "counter", "Requests failed.", self.failed)
        _scalar(lines, "requests_shed_total", "counter", "Requests refused (429).", self.shed)
        _scalar(
            lines, "internal_errors_total", "counter", "Unexpected errors.", self.internal_errors
        )
        name = _PREFIX + "requests_finished_total"
        lines += [f"# HELP {name} Requests finished, by reason.", f"# TYPE {name} counter"]
        for reason in sorted(self.finished):
            lines.append(f'{name}{{finish_reason="{reason}"}} {self.finished[reason]}')
        _scalar(lines, "prompt_tokens_total", "counter", "Prompt tokens.", self.prompt_tokens)
        _scalar(
            lines, "generation_tokens_total", "counter", "Tokens generated.", self.generation_tokens
        )
        lines += self.ttft.render() + self.jct.render()
        _scalar(
            lines, "engine_restarts_total", "counter", "Engine restarts.", self.engine_restarts
        )
        restarting = int(self.engine_restarting)
        _scalar(lines, "engine_restarting", "gauge", "Engine restarting (1).", restarting)
        if self.scheduler is not None:
            lines += _scheduler_lines(self.scheduler)
        return "\n".join(lines) + "\n"


def _scalar(lines: list[str], name: str, kind: str, help_text: str, value: float) -> None:
    full = _PREFIX + name
    lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full} {value}"]


_GAUGES = {
    "tick",
    "jobs",
    "free_device_blocks",
    "total_device_blocks",
    "free_host_blocks",
    "total_host_blocks",
}


def _scheduler_lines(stats: SchedulerStats) -> list[str]:
    """Every SchedulerStats field as fastserve_scheduler_<field>; totals are counters."""
    lines = []
    for f in fields(stats):
        name = f"fastserve_scheduler_{f.name}"
        kind = "gauge" if f.name in _GAUGES else "counter"
        lines += [f"# TYPE {name} {kind}", f"{name} {getattr(stats, f.name)}"]
    return lines
