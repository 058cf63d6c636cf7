"""Overload against a server with its default admission bounds: do accepted requests all
complete, are the rest refused fast with 429 + Retry-After, and how long do accepted ones take?

Starts `fastserve serve` (default flags plus `--server-arg`s), measures its capacity for a
short-request workload with a closed loop, then sends `--requests` requests at `--load`
times that rate (open loop, Poisson) and waits for every answer. Prints a table, writes JSON.

    python benchmarks/overload.py --load 10 --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from fastserve.benchmarks.bench_server import running_server


def body(rng: np.random.Generator, args: argparse.Namespace) -> dict[str, Any]:
    ids = rng.integers(100, 10_000, size=args.prompt_len).tolist()
    return {"model": args.model_name, "prompt": ids, "max_tokens": args.output_len,
            "min_tokens": args.output_len, "ignore_eos": True, "temperature": 0.0}  # fmt: skip


async def one(session: aiohttp.ClientSession, url: str, b: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json=b) as resp:
        await resp.read()
        return {
            "status": resp.status,
            "seconds": time.perf_counter() - start,
            "retry_after": resp.headers.get("Retry-After"),
        }


async def capacity(url: str, args: argparse.Namespace) -> float:
    """Requests/s with `--batch` requests always in flight (the engine kept busy)."""
    rng = np.random.default_rng(1)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/v1/models") as resp:
            args.model_name = (await resp.json())["data"][0]["id"]
        warm = await one(s, url, body(rng, args))
        if warm["status"] != 200:
            raise SystemExit(f"warm-up request failed with HTTP {warm['status']}")
        start, done = time.perf_counter(), 0

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() - start < args.capacity_seconds:
                await one(s, url, body(rng, args))
                done += 1

        await asyncio.gather(*(worker() for _ in range(args.batch)))
        return done / (time.perf_counter() - start)


async def overload(url: str, rate: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(2)
    gaps = rng.exponential(1 / rate, size=args.requests)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        tasks, t = [], time.perf_counter()
        for gap in gaps:
            t += gap
            await asyncio.sleep(max(0.0, t - time.perf_counter()))
            tasks.append(asyncio.create_task(one(s, url, body(rng, args))))
        return await asyncio.gather(*tasks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--load", type=float, default=10.0, help="multiple of the measured capacity")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--output-len", type=int, default=8)
    p.add_argument("--batch", type=int, default=16, help="closed-loop clients for the capacity")
    p.add_argument("--capacity-seconds", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--out", default="bench_results/overload.json")
    args = p.parse_args()
    log = Path(args.out).parent / "logs" / "overload-serve.log"
    with running_server("gittins", args.server_arg, log, ready_timeout=600) as url:
        cap = asyncio.run(capacity(url, args))
        rate = args.load * cap
        print(f"capacity {cap:.2f} req/s; sending {args.requests} at {rate:.1f} req/s", flush=True)
        started = time.perf_counter()
        results = asyncio.run(overload(url, rate, args))
        elapsed = time.perf_counter() - started
    ok = [r for r in results if r["status"] == 200]
    rejected = [r for r in results if r["status"] == 429]
    other = [r for r in results if r["status"] not in (200, 429)]
    ok_s = np.array([r["seconds"] for r in ok]) if ok else np.zeros(1)
    rej_s = np.array([r["seconds"] for r in rejected]) if rejected else np.zeros(1)
    summary = {
        "capacity_req_s": cap, "rate_req_s": rate, "sent": len(results), "elapsed_s": elapsed,
        "accepted_completed": len(ok), "rejected_429": len(rejected), "other_status": len(other),
        "other_statuses": sorted({r["status"] for r in other}),
        "accepted_p50_s": float(np.percentile(ok_s, 50)),
        "accepted_p99_s": float(np.percentile(ok_s, 99)),
        "reject_p50_ms": float(np.percentile(rej_s, 50) * 1e3),
        "reject_p99_ms": float(np.percentile(rej_s, 99) * 1e3),
        "rejects_with_retry_after": sum(1 for r in rejected if r["retry_after"]),
    }  # fmt: skip
    for key, value in summary.items():
        print(f"{key:<28} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
