"""Prefix caching on vs off on real servers, interleaved in time: on off on off ...

As policies_ab.py (this machine's speed drifts, so runs are compared only within a pair):
each pair starts a fresh server with prefix caching on (the default), then a fresh one
with `--no-prefix-caching`, each with the same policy and `--server-arg`s, replays the same
workload (`--preset multi-turn` unless another is given: shared system prompts, each turn
resending the conversation so far) and stops it. Prints mean TTFT and mean JCT of every
run and their on/off ratios pair by pair (median [min, max]), with the prefix-cache hit
rate of each run; writes JSON.

    python benchmarks/prefix_cache_ab.py --pairs 3
    # a smoke run on a tiny model (ids below its vocabulary):
    python benchmarks/prefix_cache_ab.py --requests 4 --pairs 1 --max-token-id 250 \\
        --server-arg=--model=DIR --server-arg=--no-auto-profile

The hit rate counts the replay's two warm-up requests too (random prompts: no hits).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from fastserve.benchmarks.bench_report import real_summary, write_report
from fastserve.benchmarks.bench_server import running_server
from fastserve.benchmarks.loadgen import replay
from fastserve.benchmarks.server_metrics import parse_metrics
from fastserve.benchmarks.workload_build import build_workload, describe_line
from fastserve.benchmarks.workload_options import add_workload_args, resolve_workload_args

ARMS = (("on", []), ("off", ["--no-prefix-caching"]))
FIGURES = (
    ("ttft_mean", "TTFT s"),
    ("ttft_p99", "p99 TTFT s"),
    ("jct_mean", "mean JCT s"),
    ("jct_p99", "p99 JCT s"),
    ("throughput_tokens_per_s", "out tok/s"),
    ("prefix_cache_hit_rate", "hit rate"),
)
RATIOS = ("ttft_mean", "jct_mean")  # on / off, per pair
_S = "fastserve_scheduler_"


def cache_counters(url: str) -> dict[str, float]:
    """The server's prefix-cache counters since it started."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        metrics = parse_metrics(resp.read().decode())
    queried = metrics.get(_S + "prefix_cache_queried_tokens_total", 0.0)
    hit = metrics.get(_S + "prefix_cache_hit_tokens_total", 0.0)
    return {
        "prefix_cache_queried_tokens": queried,
        "prefix_cache_hit_tokens": hit,
        "prefix_cache_hit_rate": hit / queried if queried else 0.0,
    }


def run_one(arm: str, extra: list[str], args: argparse.Namespace, workload: list,
            log: Path) -> dict[str, Any]:  # fmt: skip
    server_args = [*args.server_arg, *extra]
    with running_server(args.policy, server_args, log, ready_timeout=args.ready_timeout) as url:
        # No request is cut off: a slow run must finish to be compared.
        results, counters, elapsed = asyncio.run(
            replay(url, workload, progress=False, request_timeout=3600.0,
                   token_range=(100, args.max_token_id))
        )  # fmt: skip
        cache = cache_counters(url)
    summary = real_summary(results, counters, elapsed)
    summary.pop("jcts")
    summary.update(cache)
    if summary["num_failed"]:
        raise SystemExit(f"caching {arm}: {summary['num_failed']} requests failed; see {log}")
    return summary


def table(pairs: list[dict[str, dict[str, Any]]]) -> str:
    head = f"{'prefix caching':<16}" + "".join(f"{h:>13}" for _, h in FIGURES)
    lines = [head, "-" * len(head)]
    for arm, _ in ARMS:
        row = f"{arm:<16}"
        for key, _ in FIGURES:
            row += f"{statistics.median(p[arm].get(key, 0.0) for p in pairs):>13.3f}"
        lines.append(row)
    lines.append("")
    lines.append("on / off, per pair (median [min, max]):")
    for key, label in FIGURES:
        if key not in RATIOS:
            continue
        r = ratios(pairs, key)
        if r:
            lines.append(f"  {label}: {statistics.median(r):.3f} [{min(r):.3f}, {max(r):.3f}]")
    return "\n".join(lines)


def ratios(pairs: list[dict[str, dict[str, Any]]], key: str) -> list[float]:
    return [p["on"][key] / p["off"][key] for p in pairs if p["off"].get(key, 0.0) > 0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_workload_args(p)
    p.add_argument("--requests", dest="num_requests", type=int, help="alias of --num-requests")
    p.add_argument("--policy", default="gittins:ignore_max_tokens=true",
                   help="policy spec of both servers (benchmarks force lengths with max_tokens)")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    p.add_argument("--max-token-id", type=int, default=10_000, help="prompt ids in [100, this)")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--out", default="bench_results/prefix_cache_ab.json")
    args = p.parse_args()
    args.preset = args.preset or "multi-turn"
    w = resolve_workload_args(args)
    workload = build_workload(w)
    print(f"workload: {describe_line(workload)}", flush=True)
    out = Path(args.out)
    pairs: list[dict[str, dict[str, Any]]] = []
    started = time.perf_counter()
    for i in range(args.pairs):
        pair = {}
        for arm, extra in ARMS:
            log = out.parent / "logs" / f"prefix-ab-{i}-{arm}.log"
            s = pair[arm] = run_one(arm, extra, args, workload, log)
            print(
                f"pair {i + 1} caching {arm}: TTFT {s['ttft_mean']:.3f} s, mean JCT "
                f"{s['jct_mean']:.3f} s, hit rate {s['prefix_cache_hit_rate']:.2f}",
                flush=True,
            )
        pairs.append(pair)
    text = table(pairs)
    print(text)
    report = {
        "workload": w,
        "realised": describe_line(workload),
        "policy": args.policy,
        "server_args": args.server_arg,
        "pairs": pairs,
        "ratios_on_off": {key: ratios(pairs, key) for key in RATIOS},
        "table": text,
        "elapsed_s": time.perf_counter() - started,
    }
    write_report(out, report)


if __name__ == "__main__":
    main()
