"""The soak test's end checks: KV blocks back in their pools, no request stuck, no
internal error (from /metrics), and the memory of every server process (RSS)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.server_harness import descendants

try:  # psutil when installed; /proc otherwise (Linux)
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

_F, _S = "fastserve_frontend_", "fastserve_scheduler_"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name (with labels): value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def fetch_metrics(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as resp:
        return parse_metrics(await resp.text())


def leaks(m: dict[str, float]) -> dict[str, float]:
    """What is still held: requests the frontend runs, jobs the scheduler holds, and KV
    blocks out of each pool. All 0 once the server is idle after the soak."""
    return {
        "frontend_requests_running": m.get(_F + "requests_running", -1),
        "scheduler_jobs": m.get(_S + "jobs", -1),
        "leaked_device_blocks": m.get(_S + "total_device_blocks", -1)
        - m.get(_S + "free_device_blocks", 0),
        "leaked_host_blocks": m.get(_S + "total_host_blocks", -1)
        - m.get(_S + "free_host_blocks", 0),
        "internal_errors": m.get(_F + "internal_errors_total", -1),
    }


async def wait_settled(
    session: aiohttp.ClientSession, url: str, timeout_s: float
) -> tuple[dict[str, float], dict[str, float], float]:
    """Poll /metrics until nothing is held (aborted jobs free their blocks when their
    tick completes, and the scheduler's gauges arrive up to 0.2 s late), or the timeout.
    Returns (metrics, leaks, seconds waited); the leaks are what the checks judge."""
    start = time.monotonic()
    while True:
        metrics = await fetch_metrics(session, url)
        held = leaks(metrics)
        if all(v == 0 for v in held.values()) or time.monotonic() - start > timeout_s:
            return metrics, held, time.monotonic() - start
        await asyncio.sleep(0.2)


def _rss_bytes(pid: int) -> int | None:
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_sample(root_pid: int) -> dict[str, int]:
    """RSS in bytes of the supervisor and every child, by process title."""
    tree = {root_pid: "fastserve-supervisor", **descendants(root_pid)}
    sample = {}
    for pid, title in tree.items():
        rss = _rss_bytes(pid)
        if rss is not None:
            if title.startswith("fastserve-"):
                name = title.split()[0]
            else:  # multiprocessing's resource tracker, or whatever else a child started
                name = "resource_tracker" if "resource_tracker" in title else f"pid-{pid}"
            sample[name.removeprefix("fastserve-")] = rss
    return sample


def rss_table(samples: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per process: MiB at each sample point, and growth from the first to the last."""
    points = list(samples)
    names = sorted({n for s in samples.values() for n in s})
    rows = []
    for name in names:
        row: dict[str, Any] = {"process": name}
        for point in points:
            value = samples[point].get(name)
            row[f"{point}_mib"] = None if value is None else round(value / 2**20, 1)
        first, last = samples[points[0]].get(name), samples[points[-1]].get(name)
        row["growth_mib"] = None if first is None or last is None else round(
            (last - first) / 2**20, 1
        )
        rows.append(row)
    return rows


def format_report(report: dict[str, Any]) -> str:
    """The console table: outcomes per channel, checks, memory."""
    lines = [f"soak: {report['completed']}/{report['n']} jobs in {report['seconds']:.1f}s "
             f"({report['jobs_per_s']:.1f}/s), concurrency {report['concurrency']}"]  # fmt: skip
    kinds = sorted({k for c in report["outcomes"].values() for k in c})
    lines.append(f"{'channel':<8}" + "".join(f"{k:>12}" for k in kinds))
    for channel, counts in report["outcomes"].items():
        lines.append(f"{channel:<8}" + "".join(f"{counts.get(k, 0):>12}" for k in kinds))
    lines.append("checks (0 = pass):")
    for name, value in report["held"].items():
        lines.append(f"  {name:<28}{value:>10g}")
    lines.append(f"  {'unexpected errors':<28}{report['errors']:>10}")
    lines.append(f"  {'server healthy at the end':<28}{str(report['healthy_at_end']):>10}")
    points = [p for p in ("start", "middle", "end") if p in report["rss_points"]]
    lines.append(f"{'RSS MiB':<16}" + "".join(f"{p:>10}" for p in points) + f"{'growth':>10}")
    for row in report["rss"]:
        cells = "".join(f"{row.get(p + '_mib') or 0:>10.1f}" for p in points)
        lines.append(f"{row['process']:<16}{cells}{row['growth_mib'] or 0:>10.1f}")
    lines.append("PASS" if report["passed"] else f"FAIL: {report['failures']}")
    return "\n".join(lines)
