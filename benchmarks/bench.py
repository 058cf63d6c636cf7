"""`fastserve bench`: replay a workload against a server, or compare scheduling policies.

One run (a server is already up):

    fastserve bench --url http://127.0.0.1:8000 --preset heavy-tailed --rate 1

vLLM's flags work as in `vllm bench serve`: `--request-rate`, `--burstiness` (gamma
inter-arrivals; with `--arrivals poisson`), `--max-concurrency` (requests in flight) and
`--goodput ttft:MS tpot:MS e2el:MS`; the report has TTFT, TPOT, ITL and E2E latency, and
the JSON repeats them under vLLM's names.

Policy comparison (starts one `fastserve serve` per policy with the same batch limits and a
small device KV pool plus a host pool, so preempted jobs are swapped; replays the SAME
workload at each rate; then simulates the same workload with the cost model):

    fastserve bench --compare-policies fcfs,mlfq,skip-join-mlfq,oracle \
        --preset heavy-tailed --rates 0.5,1 --server-threads 1

prints one table with real and simulated figures side by side, and writes JSON (--out)
and a PNG (JCT CDF per policy; mean and p99 JCT against rate when several rates are given).
Measured on the shared 2-core CPU with SmolLM2-135M (--server-threads 1, --target-load 4,
60 requests): about 1 minute per policy (server start ~5 s, warm-up, replay, drain); four
policies took 4 minutes. Profile first (`fastserve profile --threads 1`) so the servers'
policies and the simulator use this machine's cost model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fastserve.benchmarks.bench_report import (
    compact_runs,
    comparison_table,
    real_summary,
    single_table,
    write_figure,
)
from fastserve.benchmarks.bench_timeline import write_queue_figure
from fastserve.benchmarks.loadgen import RequestResult, check_local_url, replay
from fastserve.benchmarks.profile_cmd import cached_cost_model
from fastserve.benchmarks.simulate_cmd import (
    add_engine_args,
    engine_kwargs,
    mean_unloaded_jct,
    policy_list,
    resolve_rates,
    run_rate,
    run_sim,
)
from fastserve.benchmarks.workload_build import build_workload, describe_line, workload_info
from fastserve.benchmarks.workload_options import add_workload_args, resolve_workload_args
from fastserve.runtime.sched.registry import make_policy_from_spec
from fastserve.runtime.sim.metrics import Reservoir, parse_goodput, vllm_names
from fastserve.runtime.sim.workload import Request


def _token_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    lo, hi = int(low), int(high)
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError("--token-range needs LOW:HIGH with 0 <= LOW < HIGH")
    return lo, hi


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _slo(text: str) -> tuple[str, float]:
    try:
        return next(iter(parse_goodput([text]).items()))
    except ValueError as bad:
        raise argparse.ArgumentTypeError(str(bad)) from None


def register(p: argparse.ArgumentParser) -> None:
    add_workload_args(p)
    g = p.add_argument_group("client")
    g.add_argument("--url", default="http://127.0.0.1:8000", help="server (loopback only)")
    g.add_argument("--model-name", default=None, help="`model` field (default: /v1/models)")
    g.add_argument(
        "--token-range",
        type=_token_range,
        default=(100, 10_000),
        help="prompt token ids are drawn from LOW:HIGH (must be inside the vocabulary)",
    )
    g.add_argument("--repeat-token", action="store_true", help="prompts repeat the LOW id")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument(
        "--max-concurrency", type=_positive, default=None,
        help="requests in flight at most, as vLLM's (later arrivals wait; default: no bound)",
    )  # fmt: skip
    g.add_argument(
        "--goodput", type=_slo, nargs="+", default=[], metavar="KEY:MS",
        help="SLOs for goodput (req/s meeting all), e.g. ttft:500 tpot:50 e2el:10000",
    )  # fmt: skip
    g.add_argument("--warmup", type=int, default=2, help="requests sent before measuring")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--out", default="bench_results/bench.json")
    g.add_argument("--figure", default=None, help="PNG path (default: beside --out)")
    c = p.add_argument_group("policy comparison (starts its own servers)")
    c.add_argument(
        "--compare-policies",
        default=None,
        help="e.g. fcfs,skip-join-mlfq,oracle,gittins:ignore_max_tokens=true (NAME:KEY=VALUE...)",
    )
    c.add_argument("--rates", type=_floats, default=None, help="req/s, comma-separated")
    c.add_argument("--server-threads", type=int, default=0, help="OMP_NUM_THREADS of servers")
    c.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `fastserve serve` flag, repeatable (e.g. --server-arg=--swap-watermark=0.2)",
    )
    c.add_argument("--no-sim", action="store_true", help="skip the simulation")
    c.add_argument("--ready-timeout", type=float, default=300.0, help="server start-up limit")
    add_engine_args(p)
    p.set_defaults(func=run)


def _replay(
    args: argparse.Namespace, url: str, wl: list[Request], seed: int, desc: str
) -> dict[str, Any]:
    itl = Reservoir(seed=seed)  # every inter-token gap, in bounded memory
    results, counters, elapsed = asyncio.run(
        replay(
            url,
            wl,
            model=args.model_name,
            token_range=args.token_range,
            repeat_token=args.repeat_token,
            seed=seed,
            request_timeout=args.request_timeout,
            max_concurrency=args.max_concurrency,
            warmup=args.warmup,
            progress=not args.no_progress,
            desc=desc,
            itl=itl,
        )
    )
    summary = real_summary(results, counters, elapsed, itl=itl, slo=dict(args.goodput))
    summary["vllm"] = vllm_names(summary)  # the same figures under vLLM's names, in ms
    summary["requests"] = [r.to_dict() for r in results]
    _warn_failures(results, desc)
    return summary


def _warn_failures(results: list[RequestResult], desc: str) -> None:
    bad = [r for r in results if not r.ok]
    if bad:
        print(f"{desc}: {len(bad)} of {len(results)} requests failed, e.g. {bad[0].error}")


def _write_json(path: str, report: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return out


def run_single(args: argparse.Namespace) -> int:
    url = check_local_url(args.url)
    w = resolve_workload_args(args)
    wl = build_workload(w)
    print(f"workload: {describe_line(wl)}")
    summary = _replay(args, url, wl, w["seed"], "bench")
    print(single_table(summary))
    report = {"command": "bench", "url": url, "workload": workload_info(w, wl), "summary": summary}
    out = _write_json(args.out, report)
    run = {"policy": "server", "rate": run_rate(w["rate"], wl), "real": summary}
    figure = write_figure(args.figure or out.with_suffix(".png"), [run], describe_line(wl))
    queue = write_queue_figure(
        out.with_suffix(".queue.png"), [("queue depth", summary["requests"])], describe_line(wl)
    )
    print(f"wrote {out}, {figure} (JCT CDF), {queue} (queue depth)")
    return 0 if summary["num_failed"] == 0 else 1


def server_args(args: argparse.Namespace) -> list[str]:
    """`fastserve serve` flags every compared server shares."""
    out = [
        "--max-batch-jobs", str(args.max_batch_jobs),
        "--max-batch-tokens", str(args.max_batch_tokens),
        "--block-size", str(args.block_size),
        "--num-device-blocks", str(args.num_device_blocks),
        "--num-host-blocks", str(args.num_host_blocks),
        "--dtype", args.dtype,
        "--device", args.device,
        "--ready-timeout", str(args.ready_timeout),
    ]  # fmt: skip
    if args.model:
        out += ["--model", args.model]
    return out + list(args.server_arg)


def run_compare(args: argparse.Namespace) -> int:
    from fastserve.benchmarks.bench_server import running_server

    started = time.perf_counter()
    w = resolve_workload_args(args)
    policies = policy_list(args.compare_policies)
    cost, source = cached_cost_model(args.cost_model, args.model, args.dtype, args.device)
    for spec in policies:  # fail on a bad name or option now, not after the first servers
        make_policy_from_spec(spec, cost)
    kw = engine_kwargs(args)
    print(f"cost model (simulation): {source}")
    rates, notes = resolve_rates(args, w, cost, kw)
    # Keyed by the rate each run is reported at (the realised one if none was asked for).
    workloads: dict[float, list[Request]] = {}
    for rate in rates:
        wl = build_workload(w, rate=rate)
        workloads[run_rate(rate, wl)] = wl
        print(f"workload: {describe_line(wl)}")
    out_dir = Path(args.out).parent
    runs: list[dict[str, Any]] = []
    for policy in policies:
        log = out_dir / "logs" / f"serve-{policy.replace(':', '_').replace('=', '-')}.log"
        ready = time.perf_counter()
        with running_server(
            policy, server_args(args), log, threads=args.server_threads,
            ready_timeout=args.ready_timeout,
        ) as url:  # fmt: skip
            print(f"{policy}: server ready in {time.perf_counter() - ready:.0f} s")
            for rate, wl in workloads.items():
                real = _replay(args, url, wl, w["seed"], f"{policy} @ {rate:.3g}/s")
                runs.append({"policy": policy, "rate": rate, "real": real})
    if not args.no_sim:
        from tqdm import tqdm

        for run in tqdm(runs, desc="simulating", unit="run", disable=args.no_progress):
            wl = workloads[run["rate"]]
            run["sim"] = run_sim(wl, run["policy"], cost, kw)
            run["sim"]["unloaded_jct_mean"] = mean_unloaded_jct(wl, cost, kw["max_batch_tokens"])
    table = comparison_table(runs)
    print(table)
    report = {
        "command": "bench --compare-policies",
        "workload": w,
        "workloads": {str(k): workload_info(w, v) for k, v in workloads.items()},
        "engine": kw,
        "server_args": server_args(args),
        "server_threads": args.server_threads,
        "cost_model": {"source": source, **json.loads(cost.to_json())},
        "notes": notes,
        "table": table,
        "elapsed_s": time.perf_counter() - started,
        "runs": runs,
    }
    out = _write_json(args.out, report)
    _write_json(str(out.with_suffix(".summary.json")), {**report, "runs": compact_runs(runs)})
    figure = args.figure or str(out.with_suffix(".png"))
    title = f"{len(policies)} policies; {describe_line(next(iter(workloads.values())))}"
    print(f"wrote {out}, {write_figure(figure, runs, title)} ({report['elapsed_s']:.0f} s)")
    top = max(workloads)  # queue depth per policy at the highest rate, as the CDF panel
    series = [(f"{r['policy']} @ {top:.3g}/s", r["real"]["requests"]) for r in runs
              if r["rate"] == top]  # fmt: skip
    print(f"wrote {write_queue_figure(out.with_suffix('.queue.png'), series, title)}")
    return 0 if all(run["real"]["num_failed"] == 0 for run in runs) else 1


def run(args: argparse.Namespace) -> int:
    return run_compare(args) if args.compare_policies else run_single(args)
