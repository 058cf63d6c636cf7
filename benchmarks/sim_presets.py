"""Simulated policies on every workload preset at several loads: mean JCT against FCFS and
against the total-work oracle, p99 against FCFS. The same policy objects and batch builder
as the server (runtime/sim), priced by this machine's cached profile (`fastserve profile`).

    python benchmarks/sim_presets.py --policies fcfs,gittins:ignore_max_tokens=true,oracle

Prints one table (rows: preset x load; a column group per policy) and writes JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastserve.benchmarks.bench_report import write_report
from fastserve.benchmarks.profile_cmd import cached_cost_model
from fastserve.benchmarks.simulate_cmd import capacity_rate, run_sim
from fastserve.benchmarks.workload_build import build_workload
from fastserve.benchmarks.workload_options import BASE, DEFAULT_TRACE, PRESETS
from fastserve.runtime.config import ServerConfig


def preset_settings(name: str, seed: int) -> dict[str, Any]:
    return {**BASE, **PRESETS[name], "preset": name, "trace": DEFAULT_TRACE, "seed": seed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = ServerConfig()
    d.scheduler.resolve_batch_limits("cpu")
    p.add_argument("--policies", default="fcfs,gittins:ignore_max_tokens=true,oracle")
    p.add_argument("--presets", default=",".join(sorted(PRESETS)))
    p.add_argument("--loads", default="1,3", help="multiples of the capacity")
    p.add_argument("--seeds", default="0")
    p.add_argument("--max-batch-jobs", type=int, default=d.scheduler.max_batch_jobs)
    p.add_argument("--max-batch-tokens", type=int, default=d.scheduler.max_batch_tokens)
    p.add_argument("--max-started-jobs", type=int, default=d.scheduler.max_started_jobs)
    p.add_argument("--num-device-blocks", type=int, default=1456, help="1 GiB of SmolLM2 fp32")
    p.add_argument("--out", default="bench_results/sim_presets.json")
    args = p.parse_args()
    policies = args.policies.split(",")
    cost, source = cached_cost_model(None)
    started = ServerConfig().scheduler
    started.max_batch_jobs, started.max_started_jobs = args.max_batch_jobs, args.max_started_jobs
    kw = {
        "max_batch_jobs": args.max_batch_jobs,
        "max_batch_tokens": args.max_batch_tokens,
        "num_device_blocks": args.num_device_blocks,
        "max_started": started.started_bound(),
        "swap_time_per_block": 1e-4,
    }
    print(f"cost model: {source}; engine {kw}")
    rows: list[dict[str, Any]] = []
    for preset in args.presets.split(","):
        for load in (float(x) for x in args.loads.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                w = preset_settings(preset, seed)
                rate = load * capacity_rate(w, cost, args.max_batch_jobs)
                wl = build_workload(w, rate=rate)
                res = {pol: run_sim(wl, pol, cost, kw) for pol in policies}
                rows.append({"preset": preset, "load": load, "seed": seed, "rate": rate,
                             "runs": res})  # fmt: skip
    base, oracle = policies[0], "oracle" if "oracle" in policies else None
    head = f"{'preset':<13}{'load':>5}{'seed':>5}{base + ' JCT':>12}"
    for pol in policies[1:]:
        head += f" | {pol[:28]:>28} JCT/F p99/F JCT/O"
    print(head)
    for r in rows:
        f = r["runs"][base]
        line = f"{r['preset']:<13}{r['load']:>5g}{r['seed']:>5}{f['jct_mean']:>12.2f}"
        for pol in policies[1:]:
            s = r["runs"][pol]
            o = r["runs"][oracle]["jct_mean"] if oracle else float("nan")
            line += (
                f" | {'':>28} {s['jct_mean'] / f['jct_mean']:5.3f} "
                f"{s['jct_p99'] / f['jct_p99']:5.3f} {s['jct_mean'] / o:5.3f}"
            )
        print(line)
    write_report(args.out, {"engine": kw, "cost_model": source, "rows": rows})


if __name__ == "__main__":
    main()
