"""Scheduling policies on real servers, interleaved in time: A B, B A, A B ...

This machine's speed drifts (two identical loaded runs differed by 1.5x in mean JCT on the
same day), so policies are compared only within a pair: each pair starts one server per
policy, in turn (the order alternating from pair to pair), with the server's default flags
plus `--server-arg`s, replays the same workload, and stops it. Ratios to the first policy
are taken pair by pair; the table quotes their median and range. Writes JSON.

    python benchmarks/policies_ab.py --policies fcfs,gittins:ignore_max_tokens=true \\
        --preset code --pairs 2

Benchmarks force each output length with max_tokens (and ignore_eos), so a policy that
reads max_tokens would be an oracle: compare the default policy as
`gittins:ignore_max_tokens=true`, which learns the lengths instead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from fastserve.benchmarks.bench_report import real_summary, write_report
from fastserve.benchmarks.bench_server import running_server
from fastserve.benchmarks.loadgen import replay
from fastserve.benchmarks.workload_build import build_workload, describe_line
from fastserve.benchmarks.workload_options import add_workload_args, resolve_workload_args

FIGURES = (
    ("jct_mean", "mean JCT s"),
    ("jct_p99", "p99 JCT s"),
    ("ttft_mean", "TTFT s"),
    ("throughput_tokens_per_s", "out tok/s"),
    ("preemptions", "preempt"),
    ("swaps", "swaps"),
)


def run_one(policy: str, args: argparse.Namespace, workload: list, log: Path) -> dict[str, Any]:
    with running_server(policy, args.server_arg, log, ready_timeout=args.ready_timeout) as url:
        # No request is cut off: an overloaded FCFS run can take many minutes to drain.
        results, counters, elapsed = asyncio.run(
            replay(url, workload, progress=False, request_timeout=3600.0)
        )
    summary = real_summary(results, counters, elapsed)
    summary.pop("jcts")
    if summary["num_failed"]:
        raise SystemExit(f"{policy}: {summary['num_failed']} requests failed; see {log}")
    return summary


def table(pairs: list[dict[str, dict[str, Any]]], policies: list[str]) -> str:
    base = policies[0]
    head = f"{'policy':<34}" + "".join(f"{h:>12}" for _, h in FIGURES)
    lines = [head, "-" * len(head)]
    for policy in policies:
        row = f"{policy:<34}"
        for key, _ in FIGURES:
            row += f"{statistics.median(p[policy][key] for p in pairs):>12.3f}"
        lines.append(row)
    lines.append("")
    lines.append(f"ratios to {base}, per pair (median [min, max]):")
    for policy in policies[1:]:
        cells = []
        for key, header in FIGURES[:4]:
            r = [p[policy][key] / p[base][key] for p in pairs if p[base][key] > 0]
            cells.append(f"{header} {statistics.median(r):.3f} [{min(r):.3f}, {max(r):.3f}]")
        lines.append(f"  {policy}: " + "; ".join(cells))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_workload_args(p)
    p.add_argument("--policies", default="fcfs,gittins:ignore_max_tokens=true")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--out", default="bench_results/policies_ab.json")
    args = p.parse_args()
    policies = [s for s in args.policies.split(",") if s]
    w = resolve_workload_args(args)
    workload = build_workload(w)
    print(f"workload: {describe_line(workload)}", flush=True)
    out = Path(args.out)
    pairs: list[dict[str, dict[str, Any]]] = []
    started = time.perf_counter()
    for i in range(args.pairs):
        pair = {}
        # Alternate the order (A B, B A, ...): on this machine the later run of a pair was
        # measured 10-30% slower whatever its policy, so a fixed order biases every ratio.
        for policy in policies if i % 2 == 0 else policies[::-1]:
            log = out.parent / "logs" / f"ab-{i}-{policy.replace(':', '_').replace('=', '-')}.log"
            pair[policy] = run_one(policy, args, workload, log)
            print(
                f"pair {i + 1} {policy}: mean JCT {pair[policy]['jct_mean']:.2f} s, "
                f"p99 {pair[policy]['jct_p99']:.2f} s, "
                f"{pair[policy]['throughput_tokens_per_s']:.1f} tok/s",
                flush=True,
            )
        pairs.append(pair)
    text = table(pairs, policies)
    print(text)
    report = {
        "workload": w,
        "realised": describe_line(workload),
        "server_args": args.server_arg,
        "pairs": pairs,
        "table": text,
        "elapsed_s": time.perf_counter() - started,
    }
    write_report(out, report)


if __name__ == "__main__":
    main()
