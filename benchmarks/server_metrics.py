"""What a benchmark reads of a server's `/metrics`: the scheduler's preemption and swap
counters before and after a run, and whether the scheduler has gone idle.

These are the bare `fastserve_scheduler_<name>` series (runtime/frontend/scheduler_metrics.py
still serves them for readers like this one), so any FastServe version can be measured.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

COUNTERS = ("preemptions", "offloads", "uploads", "recomputes", "busy_seconds", "swap_wait_seconds")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {series (with labels): value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def scheduler_counters(metrics: dict[str, float]) -> dict[str, float]:
    """The scheduler's preemption and swap counters (absent ones read 0)."""
    return {c: metrics.get(f"fastserve_scheduler_{c}", 0.0) for c in COUNTERS}


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {c: after.get(c, 0.0) - before.get(c, 0.0) for c in COUNTERS}
    delta["swaps"] = delta["offloads"] + delta["uploads"]
    return delta


async def get_metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(f"{url}/metrics") as resp:
        return parse_metrics(await resp.text()) if resp.status == 200 else {}


async def wait_idle(session: aiohttp.ClientSession, url: str, timeout: float = 3.0) -> None:
    """Until the scheduler reports no jobs (its gauges lag by up to 0.2 s), or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await get_metrics(session, url)).get("fastserve_scheduler_jobs", 0.0) == 0:
            await asyncio.sleep(0.3)  # let the last counter update arrive
            return
        await asyncio.sleep(0.2)
