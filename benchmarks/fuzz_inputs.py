"""Fuzz the frontend's inputs at scale: HTTP bodies, codec frames, ZeroMQ client frames.

The generators are the unit tests' (tests/fuzz_cases.py), driven here by a seeded
random.Random for many more cases, against the same fake scheduler. Prints one table
(cases run, clean refusals, 5xx / crashes) and writes JSON; exits 1 if anything crashed.

Run: .venv/bin/python benchmarks/fuzz_inputs.py [--n 100000] [--seed 0] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from fastserve.protocol.codec import Codec  # noqa: E402
from tests.fuzz_cases import random_frame, random_http_case, random_multipart  # noqa: E402
from tests.fuzz_harness import FuzzTarget, decode_outcome  # noqa: E402

HTTP_CONCURRENCY = 16  # cases in flight at once: the fake scheduler answers in parallel
ZMQ_BATCH = 50  # frames between two "still serving?" probes
MAX_EXAMPLES = 5  # crashing inputs kept in the JSON per fuzzer


async def fuzz_http(target: FuzzTarget, n: int, rnd: random.Random) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    examples: list[str] = []
    cases = [random_http_case(rnd) for _ in range(n)]

    async def one(i: int) -> None:
        status = await target.post(cases[i])
        counts["5xx" if status >= 500 else f"{status // 100}xx"] += 1
        if status >= 500 and len(examples) < MAX_EXAMPLES:
            examples.append(repr(cases[i])[:500])

    for start in range(0, n, HTTP_CONCURRENCY):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + HTTP_CONCURRENCY))))
    return {"counts": dict(counts), "crashes": counts["5xx"], "examples": examples}


def fuzz_codec(n: int, rnd: random.Random) -> dict[str, Any]:
    codec = Codec()
    counts: Counter[str] = Counter()
    examples: list[str] = []
    for _ in range(n):
        frame = random_frame(rnd)
        try:
            counts[decode_outcome(codec, frame)] += 1
        except Exception as exc:  # the finding: decode must raise only ProtocolError
            counts["crash"] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(f"{type(exc).__name__}: {exc} <- {frame[:200]!r}")
    return {"counts": dict(counts), "crashes": counts["crash"], "examples": examples}


async def fuzz_zmq(target: FuzzTarget, n: int, rnd: random.Random) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    examples: list[str] = []
    done = 0
    while done < n:
        batch = [random_multipart(rnd) for _ in range(min(ZMQ_BATCH, n - done))]
        try:
            seen = await target.send_frames(batch)
        except TimeoutError:
            seen = Counter({"no_answer": 1})  # the endpoint stopped serving
        counts.update(seen)
        bad = seen["5xx"] + seen["sentinel_failed"] + seen["no_answer"]
        if bad and len(examples) < MAX_EXAMPLES:
            examples.append(repr(batch)[:500])
        done += len(batch)
    crashes = counts["5xx"] + counts["sentinel_failed"] + counts["no_answer"]
    return {"counts": dict(counts), "crashes": crashes, "examples": examples}


async def run(n: int, seed: int) -> dict[str, Any]:
    target = FuzzTarget()
    await target.start()
    results: dict[str, Any] = {}
    try:
        for name in ("http", "codec", "zmq"):
            rnd = random.Random(f"{seed}-{name}")
            errors_before = target.internal_errors
            t0 = time.perf_counter()
            if name == "http":
                result = await fuzz_http(target, n, rnd)
            elif name == "codec":
                result = fuzz_codec(n, rnd)
            else:
                result = await fuzz_zmq(target, n, rnd)
            result["internal_errors"] = target.internal_errors - errors_before
            result["seconds"] = round(time.perf_counter() - t0, 2)
            result["cases"] = n
            results[name] = result
    finally:
        await target.stop()
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"{'fuzzer':<8}{'cases':>10}{'crashes/5xx':>13}{'internal':>10}{'s':>9}  outcomes")
    for name, r in results.items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items()))
        print(
            f"{name:<8}{r['cases']:>10}{r['crashes']:>13}{r['internal_errors']:>10}"
            f"{r['seconds']:>9.1f}  {outcomes}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="cases per fuzzer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results/fuzz_inputs.json")
    args = parser.parse_args(argv)
    # Every refused case logs a line: keep the console for the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    results = asyncio.run(run(args.n, args.seed))
    print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "seed": args.seed, "results": results}, indent=2))
    print(f"wrote {out}")
    bad = sum(r["crashes"] + r["internal_errors"] for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
