"""`fastserve simulate`: the scheduling policies over a workload, with a cost model.

The same policy objects as the server, driven by `runtime.sim.simulator` with a profiled
(or given) cost model instead of the engine: thousands of requests take seconds. Engine
flags (batch limits, KV pools) mirror `fastserve serve`'s so a simulation can be set up
like a real run; `fastserve bench --compare-policies` uses the same helpers.

    fastserve simulate --preset heavy-tailed --num-requests 2000 --target-load 4
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from fastserve.benchmarks.bench_report import (
    comparison_table,
    sim_summary,
    write_figure,
    write_report,
)
from fastserve.benchmarks.profile_cmd import cached_cost_model
from fastserve.benchmarks.workload_build import build_workload, describe_line, workload_info
from fastserve.benchmarks.workload_options import add_workload_args, resolve_workload_args
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.registry import canonical_policy_spec, make_policy_from_spec
from fastserve.runtime.sim.simulator import simulate, unloaded_jct
from fastserve.runtime.sim.workload import Request, describe

DEFAULT_POLICIES = "fcfs,mlfq,skip-join-mlfq,oracle"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def policy_list(text: str) -> list[str]:
    """Comma-separated policy specs (`NAME[:KEY=VALUE...]`), names made canonical."""
    return [canonical_policy_spec(p) for p in text.split(",") if p.strip()]


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Batch limits and KV pools, shared by the simulator and the servers bench starts.
    Defaults: a small device pool so that preempted jobs' KV must be swapped out."""
    g = p.add_argument_group("engine")
    g.add_argument("--model", default=None, help="model whose cached profile to use / to serve")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--cost-model", default=None, help="CostModel JSON (default: cached profile)")
    g.add_argument("--max-batch-jobs", type=int, default=8)
    g.add_argument("--max-batch-tokens", type=int, default=512)
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--num-device-blocks", type=int, default=96)
    g.add_argument("--num-host-blocks", type=int, default=2048)
    g.add_argument(
        "--swap-time-per-block", type=float, default=1e-4, help="simulated seconds per block"
    )
    g.add_argument(
        "--load",
        type=_load_multiple,
        default=None,
        help="request rate as a multiple of the engine's capacity for this workload, e.g. 3x",
    )
    g.add_argument(
        "--target-load",
        type=float,
        default=None,
        help="pick the rate where simulated FCFS mean JCT is this x its unloaded mean",
    )


def _load_multiple(text: str) -> float:
    value = float(text.strip().lower().removesuffix("x"))
    if value <= 0:
        raise argparse.ArgumentTypeError("--load needs a positive multiple, e.g. 3x")
    return value


def capacity_rate(w: dict[str, Any], cost: CostModel, max_batch_jobs: int) -> float:
    """Requests per second the engine serves of this workload when always busy: one over
    each request's mean work, its prefill plus its decode tokens at a full batch's
    per-job share of a decode step (the cost model's prices)."""
    per_token = cost.estimate_decode(max_batch_jobs) / max_batch_jobs
    requests = build_workload(w, rate=1.0)
    work = [cost.estimate_prefill(r.prompt_len) + r.output_len * per_token for r in requests]
    return 1.0 / float(np.mean(work))


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """`simulate` keyword arguments from the engine flags."""
    return {
        "max_batch_jobs": args.max_batch_jobs,
        "max_batch_tokens": args.max_batch_tokens,
        "num_device_blocks": args.num_device_blocks,
        "block_size": args.block_size,
        "num_host_blocks": args.num_host_blocks,
        "swap_time_per_block": args.swap_time_per_block,
    }


def run_sim(
    workload: list[Request], policy: str, cost: CostModel, kw: dict[str, Any]
) -> dict[str, Any]:
    start = time.perf_counter()
    res = simulate(workload, make_policy_from_spec(policy, cost), cost, **kw)
    return sim_summary(res, time.perf_counter() - start)


def mean_unloaded_jct(workload: list[Request], cost: CostModel, max_batch_tokens: int) -> float:
    return float(np.mean([unloaded_jct(r, cost, max_batch_tokens) for r in workload]))


def calibrate_rate(
    w: dict[str, Any] | Callable[[float], list[Request]],
    cost: CostModel,
    kw: dict[str, Any],
    load: float,
    iterations: int = 10,
    bounds: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """(rate, achieved load): the lowest rate found at which simulated FCFS mean JCT is
    `load` x the unloaded mean, by bisection on log(rate) over `bounds`.

    `w` is resolved workload settings (`build_workload`'s) or a function from rate to
    requests (the benchmarks' trace arrivals scaled by it). The simulation is
    deterministic, so each rate is simulated once."""
    workload_at = w if callable(w) else (lambda rate: build_workload(w, rate=rate))
    unloaded = mean_unloaded_jct(workload_at(1.0), cost, kw["max_batch_tokens"])
    if bounds is None:
        # Service demand bounds the search: at `capacity` req/s the engine would be
        # saturated even with a full batch of decodes, and at capacity/100 nearly idle.
        per_req = unloaded / kw["max_batch_jobs"]
        bounds = (0.01 / per_req, 10.0 / per_req)
    lo, hi = bounds
    loads: dict[float, float] = {}

    def achieved(rate: float) -> float:
        if rate not in loads:
            loads[rate] = run_sim(workload_at(rate), "fcfs", cost, kw)["jct_mean"] / unloaded
        return loads[rate]

    for _ in range(iterations):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if achieved(mid) >= load else (mid, hi)
    return hi, achieved(hi)


def register(p: argparse.ArgumentParser) -> None:
    add_workload_args(p, num_requests=2000)
    add_engine_args(p)
    p.add_argument(
        "--policies", default=DEFAULT_POLICIES, help="comma-separated NAME[:KEY=VALUE...]"
    )
    p.add_argument("--rates", type=_floats, default=None, help="req/s, comma-separated")
    p.add_argument("--out", default="bench_results/simulate.json")
    p.add_argument("--figure", default=None, help="PNG path (JCT CDF; JCT against rate)")
    p.set_defaults(func=run)


def resolve_rates(
    args: argparse.Namespace, w: dict[str, Any], cost: CostModel, kw: dict[str, Any]
) -> tuple[list[float | None], dict[str, Any]]:
    """Rates to run (None: the workload's own arrivals) and calibration notes."""
    if args.rates:
        return list(args.rates), {}
    if args.load:
        capacity = capacity_rate(w, cost, kw["max_batch_jobs"])
        rate = args.load * capacity
        print(f"capacity {capacity:.3g} req/s; load {args.load:g}x: {rate:.3g} req/s")
        return [rate], {"capacity_rate": capacity, "load": args.load}
    if args.target_load:
        rate, achieved = calibrate_rate(w, cost, kw, args.target_load)
        print(f"calibrated rate {rate:.3g} req/s: simulated FCFS load {achieved:.2f}x unloaded")
        if achieved < args.target_load * 0.95:
            print(f"  (load {args.target_load} is out of reach: too few requests to queue up)")
        return [rate], {"calibrated_rate": rate, "calibrated_load": achieved}
    return [w["rate"]], {}


def run_rate(rate: float | None, workload: list[Request]) -> float:
    """The rate a run is reported at: the one asked for, else the workload's realised one."""
    return rate if rate is not None else float(describe(workload)["rate_per_s"])


def run(args: argparse.Namespace) -> int:
    w = resolve_workload_args(args)
    cost, source = cached_cost_model(args.cost_model, args.model, args.dtype, args.device)
    kw = engine_kwargs(args)
    policies = policy_list(args.policies)
    print(f"cost model: {source}")
    rates, notes = resolve_rates(args, w, cost, kw)
    runs: list[dict[str, Any]] = []
    workloads = {}
    for rate in rates:
        wl = build_workload(w, rate=rate)
        workloads[rate] = workload_info(w, wl)
        print(f"workload: {describe_line(wl)}")
        unloaded = mean_unloaded_jct(wl, cost, kw["max_batch_tokens"])
        for policy in tqdm(policies, desc=f"simulating {len(wl)} requests", unit="policy"):
            sim = run_sim(wl, policy, cost, kw)
            sim["unloaded_jct_mean"] = unloaded
            runs.append({"policy": policy, "rate": run_rate(rate, wl), "sim": sim})
    print(comparison_table(runs))
    report = {
        "command": "simulate",
        "workload": w,
        "workloads": {str(k): v for k, v in workloads.items()},
        "engine": kw,
        "cost_model": {"source": source, **json.loads(cost.to_json())},
        "notes": notes,
        "runs": runs,
    }
    write_report(args.out, report)
    if args.figure:
        print(f"wrote {write_figure(args.figure, runs, describe_line(wl))}")
    return 0
