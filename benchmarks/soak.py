"""Soak test: many requests over every door of a server it starts, then leak checks.

N requests (default 10,000) spread over non-streaming HTTP, SSE, the websocket /v1/ws
and the ZeroMQ client endpoint, with bounded concurrency and a bounded total time; 30%
of them aborted or disconnected at a random point and 10% hostile bodies (the fuzzers'
generators, tests/fuzz_cases.py) mixed in. At the end the server must be idle with
nothing held (/metrics: no request running, no scheduler job, every device and host KV
block back in its pool, no internal error); RSS of every server process is sampled at
the start, the middle and the end. Prints a table, writes JSON, exits 1 on a failure.

Run: .venv/bin/python benchmarks/soak.py [--n 10000] [--model DIR] [--concurrency 16]
     [--max-seconds 3600] [--server-args "--no-auto-profile --num-device-blocks 512"]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from fastserve.benchmarks.soak_checks import (  # noqa: E402
    format_report,
    rss_sample,
    rss_table,
    wait_settled,
)
from fastserve.benchmarks.soak_clients import SoakClients  # noqa: E402
from fastserve.benchmarks.soak_plan import CHANNELS, Job, Outcome, make_plan  # noqa: E402
from fastserve.runtime.client import FastServeError  # noqa: E402
from tests.server_harness import ServerProcess, free_port  # noqa: E402

MAX_ERROR_EXAMPLES = 20  # failing jobs kept in the JSON, with why


@dataclass
class SoakConfig:
    n: int = 10_000
    model: str = ""  # model directory; "" = the default model (SmolLM2-135M-Instruct)
    # Jobs in flight at once. SmolLM2-135M on 2 CPU cores finishes ~0.5 soak jobs per
    # second (each prefill chunk takes seconds): 32 in flight made queued jobs wait past
    # two minutes, which says nothing about leaks.
    concurrency: int = 16
    max_seconds: float = 3600.0  # no job starts after this; those in flight are cut
    request_timeout_s: float = 600.0  # a job longer than this is stuck: the soak fails
    cut_fraction: float = 0.3
    hostile_fraction: float = 0.1
    max_tokens: int = 32  # each request's max_tokens is drawn from 1..this
    prompt_words: int = 40  # each prompt has 1..this words
    seed: int = 0
    server_args: list[str] = field(default_factory=list)  # extra `fastserve serve` flags
    settle_timeout_s: float = 60.0  # how long the server may take to free everything
    ready_timeout_s: float = 900.0  # the first start of the default model converts it
    out: str = "bench_results/soak.json"
    log_dir: str = ""  # where the server log goes; "" = a new temporary directory


class _Tally:
    """Outcomes per channel, failing examples, and the middle RSS sample."""

    def __init__(self, n: int, root_pid: int) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.examples: list[dict[str, Any]] = []
        self.errors = 0
        self.completed = 0
        self._n, self._root = n, root_pid
        self.samples: dict[str, dict[str, int]] = {}

    def add(self, job: Job, outcome: Outcome) -> None:
        self.counts[job.channel][outcome.kind] += 1
        if outcome.kind in ("error", "hostile_5xx", "timeout"):
            self.errors += 1
            if len(self.examples) < MAX_ERROR_EXAMPLES:
                example = {"job": job.index, "channel": job.channel, "outcome": outcome.kind}
                example |= {"detail": outcome.detail, "cut": job.cut, "body": job.body}
                example["hostile"] = None if job.hostile is None else repr(job.hostile)[:300]
                self.examples.append(example)
        self.completed += 1
        if self.completed == self._n // 2:
            self.samples["middle"] = rss_sample(self._root)


async def _run_one(clients: SoakClients, job: Job, timeout_s: float) -> Outcome:
    try:
        async with asyncio.timeout(timeout_s):
            return await clients.run(job)
    except TimeoutError:  # leaving the block hung up: the server aborts the request
        return Outcome("timeout", f"no end within {timeout_s:.0f}s")
    except (aiohttp.ClientError, ConnectionError, FastServeError, ValueError) as exc:
        return Outcome("error", f"{type(exc).__name__}: {exc}"[:300])


async def _soak(cfg: SoakConfig, server: ServerProcess, zmq_address: str) -> dict[str, Any]:
    plan = make_plan(
        cfg.n, cfg.seed, cfg.cut_fraction, cfg.hostile_fraction, cfg.max_tokens, cfg.prompt_words
    )
    tally = _Tally(cfg.n, server.proc.pid)
    async with SoakClients(server.url, zmq_address) as clients:
        # One request per channel first: lazy allocations (the first batch, the first
        # websocket) are not growth, so the start sample comes after them.
        for channel in CHANNELS:
            warm = Job(-1, channel, "completion", {"prompt": "warm up", "max_tokens": 2})
            await _run_one(clients, warm, cfg.request_timeout_s)
        tally.samples["start"] = rss_sample(server.proc.pid)
        started = time.monotonic()
        deadline = started + cfg.max_seconds
        jobs = iter(plan)

        async def worker() -> None:
            for job in jobs:  # one shared iterator: each job is taken once
                if time.monotonic() > deadline:
                    return
                tally.add(job, await _run_one(clients, job, cfg.request_timeout_s))

        time_bound_hit = False
        try:
            async with asyncio.timeout(cfg.max_seconds + cfg.request_timeout_s):
                await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        except TimeoutError:
            time_bound_hit = True
        seconds = time.monotonic() - started
        time_bound_hit = time_bound_hit or tally.completed < cfg.n
        metrics, held, settle_s = await wait_settled(
            clients.session, server.url, cfg.settle_timeout_s
        )
        async with clients.session.get(server.url + "/health") as resp:
            healthy = resp.status == 200
        tally.samples["end"] = rss_sample(server.proc.pid)
    failures = [name for name, value in held.items() if value != 0]
    failures += ["errors"] if tally.errors else []
    failures += [] if healthy else ["unhealthy at the end"]
    failures += [] if tally.completed else ["no job completed"]
    return {
        "n": cfg.n,
        "completed": tally.completed,
        "seconds": round(seconds, 2),
        "jobs_per_s": round(tally.completed / max(seconds, 1e-9), 2),
        "concurrency": cfg.concurrency,
        "time_bound_hit": time_bound_hit,
        "outcomes": {c: dict(tally.counts[c]) for c in CHANNELS},
        "held": held,
        "settle_seconds": round(settle_s, 2),
        "errors": tally.errors,
        "error_examples": tally.examples,
        "healthy_at_end": healthy,
        "rss_points": list(tally.samples),
        "rss": rss_table({p: tally.samples[p] for p in ("start", "middle", "end")
                          if p in tally.samples}),  # fmt: skip
        "metrics_at_end": {k: v for k, v in metrics.items() if "bucket" not in k},
        "passed": not failures,
        "failures": failures,
    }


def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    """Start a server, soak it, stop it; the report (also written to cfg.out)."""
    log_dir = Path(cfg.log_dir or tempfile.mkdtemp(prefix="fastserve-soak-"))
    zmq_port = free_port()
    args = ["--zmq-port", str(zmq_port), *(["--model", cfg.model] if cfg.model else [])]
    server = ServerProcess([*args, *cfg.server_args], log_dir, ready_timeout=cfg.ready_timeout_s)
    with server:
        report = asyncio.run(_soak(cfg, server, f"tcp://127.0.0.1:{zmq_port}"))
    report["config"] = asdict(cfg)
    report["server_log"] = str(server.log_path)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    d = SoakConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=d.n, help="requests")
    p.add_argument("--model", default=d.model, help="model directory (default: SmolLM2-135M)")
    p.add_argument("--concurrency", type=int, default=d.concurrency)
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help="total time bound")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout_s)
    p.add_argument("--cut-fraction", type=float, default=d.cut_fraction)
    p.add_argument("--hostile-fraction", type=float, default=d.hostile_fraction)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--prompt-words", type=int, default=d.prompt_words)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--server-args", default="", help="extra `fastserve serve` flags, quoted")
    p.add_argument("--out", default=d.out)
    a = p.parse_args(argv)
    # The clients log every refused request: keep the console for the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    cfg = SoakConfig(
        n=a.n,
        model=a.model,
        concurrency=a.concurrency,
        max_seconds=a.max_seconds,
        request_timeout_s=a.request_timeout,
        cut_fraction=a.cut_fraction,
        hostile_fraction=a.hostile_fraction,
        max_tokens=a.max_tokens,
        prompt_words=a.prompt_words,
        seed=a.seed,
        server_args=shlex.split(a.server_args),
        out=a.out,
    )
    report = run_soak(cfg)
    print(format_report(report))
    print(f"wrote {cfg.out} (server log: {report['server_log']})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
