"""The frontend's Prometheus metrics (prometheus_client) and recent latency windows.

One registry per FrontendService rather than the process-global default: tests build many
services in one process, and each must count only its own requests. The frontend is a
single process, so prometheus_client's ordinary in-process mode fits; the scheduler's
values come in its SchedulerStats messages and are exported by SchedulerCollector.
"""

from __future__ import annotations

import math
import time
from collections import deque

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from fastserve.protocol.to_frontend import SchedulerStats
from fastserve.runtime.frontend.scheduler_metrics import SchedulerCollector

# `_created` series would double the exposition, and nothing here reads them.
disable_created_metrics()

_F = "fastserve_frontend_"
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JCT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
# Gaps between tokens: a few ms on a GPU, tens of ms on a CPU, seconds when preempted.
TOKEN_GAP_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
RECENT_WINDOW_S = 60.0  # the dashboard's percentiles cover this much recent time


class RecentWindow:
    """Values observed in the last `window_s` seconds (at most `maxlen`), for percentiles
    that follow the present, unlike a histogram's totals since start."""

    def __init__(self, window_s: float = RECENT_WINDOW_S, maxlen: int = 4096) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, float]] = deque(maxlen=maxlen)

    def observe(self, value: float, now: float | None = None) -> None:
        self._items.append((time.monotonic() if now is None else now, value))

    def percentiles(self, now: float | None = None) -> dict[str, float | None]:
        """p50/p90/p99 (nearest rank) and n of the window; None without values."""
        now = time.monotonic() if now is None else now
        while self._items and self._items[0][0] < now - self.window_s:
            self._items.popleft()
        values = sorted(v for _, v in self._items)
        out: dict[str, float | None] = {"n": len(values)}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            out[name] = values[max(0, math.ceil(q * len(values)) - 1)] if values else None
        return out


class FrontendMetrics:
    """What the service counts; rendered on GET /metrics, summarised on /dashboard/data."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._running = Gauge(_F + "requests_running", "Requests in flight.", registry=r)
        self._received = Counter(_F + "requests_received", "Requests submitted.", registry=r)
        self._rejected = Counter(
            _F + "requests_rejected", "Requests refused before the scheduler.", registry=r
        )
        self._failed = Counter(_F + "requests_failed", "Requests failed.", registry=r)
        self._shed = Counter(
            _F + "requests_shed", "Requests refused by admission control (429).", registry=r
        )
        self._internal = Counter(_F + "internal_errors", "Unexpected errors.", registry=r)
        self._finished = Counter(
            _F + "requests_finished", "Requests finished, by reason.", ["finish_reason"],
            registry=r,
        )  # fmt: skip
        self._prompt = Counter(_F + "prompt_tokens", "Prompt tokens.", registry=r)
        self._generated = Counter(_F + "generation_tokens", "Tokens generated.", registry=r)
        self._ttft = Histogram(
            _F + "time_to_first_token_seconds", "Arrival to first token.",
            buckets=TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self._tpot = Histogram(
            _F + "time_per_output_token_seconds", "First to last token, per later token.",
            buckets=TOKEN_GAP_BUCKETS, registry=r,
        )  # fmt: skip
        self._itl = Histogram(
            _F + "inter_token_latency_seconds", "Between two outputs of one request.",
            buckets=TOKEN_GAP_BUCKETS, registry=r,
        )  # fmt: skip
        # E2E latency: arrival to the last token (the job completion time, JCT).
        self._jct = Histogram(
            _F + "job_completion_time_seconds", "Arrival to last token (E2E latency).",
            buckets=JCT_BUCKETS, registry=r,
        )  # fmt: skip
        self._restarts = Counter(_F + "engine_restarts", "Engine restarts.", registry=r)
        self._restarting = Gauge(_F + "engine_restarting", "Engine restarting (1).", registry=r)
        self.scheduler: SchedulerStats | None = None  # latest stats from the scheduler
        r.register(SchedulerCollector(lambda: self.scheduler))
        self.recent_ttft = RecentWindow()
        self.recent_jct = RecentWindow()

    # -- counting (called by the service, the handlers and the frontend actor) ----------

    def count_received(self, prompt_tokens: int) -> None:
        self._received.inc()
        self._prompt.inc(prompt_tokens)

    def count_rejection(self, status: int) -> None:
        self._rejected.inc()
        if status == 429:
            self._shed.inc()

    def count_internal_error(self) -> None:
        self._internal.inc()

    def count_failed(self) -> None:
        self._failed.inc()

    def count_engine_restart(self) -> None:
        self._restarts.inc()

    def observe_first_token(self, ttft: float) -> None:
        self._ttft.observe(ttft)
        self.recent_ttft.observe(ttft)

    def observe_tokens(self, n: int, gap: float | None) -> None:
        """`n` tokens of one request arrived, `gap` seconds after its previous ones."""
        self._generated.inc(n)
        if gap is not None:
            self._itl.observe(gap)

    def count_finished(self, reason: str, jct: float, tpot: float | None) -> None:
        self._finished.labels(finish_reason=reason).inc()
        self._jct.observe(jct)
        if tpot is not None:
            self._tpot.observe(tpot)
        if reason != "abort":  # a client that gave up did not complete a job
            self.recent_jct.observe(jct)

    # -- reading ------------------------------------------------------------------------

    @property
    def engine_restarting(self) -> bool:
        return bool(_value(self._restarting))

    @engine_restarting.setter
    def engine_restarting(self, value: bool) -> None:
        self._restarting.set(int(value))

    @property
    def received(self) -> int:
        return int(_value(self._received))

    @property
    def rejected(self) -> int:
        return int(_value(self._rejected))

    @property
    def failed(self) -> int:
        return int(_value(self._failed))

    @property
    def shed(self) -> int:
        return int(_value(self._shed))

    @property
    def internal_errors(self) -> int:
        return int(_value(self._internal))

    @property
    def engine_restarts(self) -> int:
        return int(_value(self._restarts))

    @property
    def prompt_tokens(self) -> int:
        return int(_value(self._prompt))

    @property
    def generation_tokens(self) -> int:
        return int(_value(self._generated))

    def render(self, running: int) -> str:
        self._running.set(running)
        return generate_latest(self.registry).decode()


def _value(metric: Counter | Gauge) -> float:
    """An unlabelled counter's or gauge's value, through the public collect()."""
    return sum(s.value for family in metric.collect() for s in family.samples)
