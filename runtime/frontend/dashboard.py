"""The live dashboard: GET /dashboard (one static page) and GET /dashboard/data (JSON).

The page polls the data once a second. History is kept here, sampled once a second by a
task that runs with the HTTP app, so a page opened during an incident shows the minutes
before it too, and the page stays a plain renderer. /dashboard/data is what /metrics is
(API key unless --metrics-public); the page itself carries no data and is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from fastserve.protocol.to_frontend import SchedulerStats

if TYPE_CHECKING:
    from fastserve.runtime.frontend.service import FrontendService

PAGE = Path(__file__).parent / "static" / "dashboard.html"
SAMPLE_PERIOD_S = 1.0
HISTORY_SAMPLES = 300  # five minutes at one sample a second
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure


class DashboardHistory:
    """Samples of the service's state over time, and the JSON the page renders."""

    def __init__(self, service: FrontendService, keep: int = HISTORY_SAMPLES) -> None:
        self.service = service
        self.samples: deque[dict[str, Any]] = deque(maxlen=keep)
        self._last: tuple[float, int, int] | None = None  # (time, tokens, preemptions)

    def sample(self, now: float | None = None) -> dict[str, Any]:
        """Record the present; rates are over the time since the previous sample."""
        now = time.monotonic() if now is None else now
        stats = self.service.metrics.scheduler
        tokens = self.service.metrics.generation_tokens
        preemptions = stats.preemptions if stats is not None else 0
        tokens_rate = preemption_rate = 0.0
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            tokens_rate = max(0, tokens - self._last[1]) / dt
            # A new engine generation restarts its counters: a drop is not negative work.
            preemption_rate = max(0, preemptions - self._last[2]) / dt
        self._last = (now, tokens, preemptions)
        point = {
            "at": now,
            "in_flight": self.service.num_running,
            "queued": stats.queued if stats else 0,
            "running": stats.running if stats else 0,
            "swapped": stats.swapped if stats else 0,
            "levels": list(stats.level_depth) if stats else [],
            "tokens_per_s": round(tokens_rate, 3),
            "preemptions_per_s": round(preemption_rate, 3),
            "kv_device_used": _used_share(stats, "device"),
            "kv_host_used": _used_share(stats, "host"),
        }
        self.samples.append(point)
        return point

    def data(self, now: float | None = None) -> dict[str, Any]:
        """Everything the page shows, as of `now`."""
        now = time.monotonic() if now is None else now
        service, m = self.service, self.service.metrics
        stats = m.scheduler
        history = list(self.samples)
        return {
            "model": service.limits.model_name,
            "status": _status(service),
            "time": time.time(),
            "window_s": m.recent_jct.window_s,
            "requests": {
                "in_flight": service.num_running,
                "queued": stats.queued if stats else None,
                "running": stats.running if stats else None,
                "swapped": stats.swapped if stats else None,
                "received_total": m.received,
                "rejected_total": m.rejected,
                "shed_total": m.shed,
                "failed_total": m.failed,
            },
            "levels": list(stats.level_depth) if stats else [],
            "kv": _kv(stats),
            "tokens_per_s": history[-1]["tokens_per_s"] if history else 0.0,
            "generation_tokens_total": m.generation_tokens,
            "latency": {
                "ttft": m.recent_ttft.percentiles(now),
                "jct": m.recent_jct.percentiles(now),
            },
            "counters": _counters(stats, m.engine_restarts),
            "recent_preemptions": _preemptions(stats),
            "history": _history(history, now),
        }


def _status(service: FrontendService) -> str:
    if service.draining:
        return "draining"
    if service.restarting:
        return "restarting"
    return "ok" if service.ready else "starting"


def _used_share(stats: SchedulerStats | None, tier: str) -> float | None:
    if stats is None:
        return None
    total = getattr(stats, f"total_{tier}_blocks")
    free = getattr(stats, f"free_{tier}_blocks")
    return round((total - free) / total, 4) if total else None


def _kv(stats: SchedulerStats | None) -> dict[str, Any]:
    if stats is None:
        return {"device": None, "host": None, "block_bytes": 0}
    tiers = {
        tier: {
            "used": getattr(stats, f"total_{tier}_blocks") - getattr(stats, f"free_{tier}_blocks"),
            "total": getattr(stats, f"total_{tier}_blocks"),
        }
        for tier in ("device", "host")
    }
    return {**tiers, "block_bytes": stats.kv_block_bytes}


def _counters(stats: SchedulerStats | None, engine_restarts: int) -> dict[str, Any]:
    names = ("preemptions", "offloads", "uploads", "recomputes", "demotions", "promotions",
             "starvation_promotions", "tick")  # fmt: skip
    out: dict[str, Any] = {n: getattr(stats, n) if stats else None for n in names}
    out["engine_restarts"] = engine_restarts
    return out


def _preemptions(stats: SchedulerStats | None) -> list[dict[str, Any]]:
    if stats is None:
        return []
    return [
        {"request_id": p.request_id, "tick": p.tick, "ticks_ago": stats.tick - p.tick,
         "location": p.location}
        for p in reversed(stats.recent_preemptions)  # newest first
    ]  # fmt: skip


def _history(samples: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """Column per series; `t` in seconds before now (<= 0), so no clocks need to agree."""
    keys = ("in_flight", "queued", "running", "swapped", "levels", "tokens_per_s",
            "preemptions_per_s", "kv_device_used", "kv_host_used")  # fmt: skip
    out: dict[str, Any] = {"period_s": SAMPLE_PERIOD_S}
    out["t"] = [round(s["at"] - now, 3) for s in samples]
    for key in keys:
        out[key] = [s[key] for s in samples]
    return out


# -- HTTP ---------------------------------------------------------------------------------

HISTORY_KEY: web.AppKey[DashboardHistory] = web.AppKey("fastserve_dashboard_history")


async def dashboard_page(request: web.Request) -> web.Response:
    # no-store: a page cached across a server upgrade would poll a changed data format.
    return web.Response(
        body=PAGE.read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


async def dashboard_data(request: web.Request) -> web.Response:
    return web.json_response(request.app[HISTORY_KEY].data(), headers={"Cache-Control": "no-store"})


async def sample_forever(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: the 1 Hz sampler runs while the app serves."""
    history = app[HISTORY_KEY]

    async def run() -> None:
        while True:
            try:
                history.sample()
            except Exception:  # a bug here must cost a chart point, not the sampler
                _log.exception("dashboard.sample_failed")
            await asyncio.sleep(SAMPLE_PERIOD_S)

    task = asyncio.create_task(run(), name="dashboard-sampler")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
