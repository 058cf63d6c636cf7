"""Simulated comparison of FCFS, skip-join MLFQ, the learned Gittins policy and the SRPT oracle.

Engine: the "cpu-small" cost model of benchmarks/sim_policies.py (assumed, not measured),
the same max batch and KV pool for every policy. Every request asks for max_tokens 2048 (at
least its length), so no policy can read a request's length from its cap.

Workloads (`--seeds` repeats each with another seed / another slice of the trace):
  azure         the Azure conversation trace as it is (arrivals unscaled), lengths x 0.25;
  bimodal       80% of outputs near 25 tokens, 20% near 500 (twenty times longer);
  heavy-tailed  lognormal outputs, CV 3 before the 2000-token cap (CV >= 2 after);
  switch        first half uniform outputs (50..150), second half heavy-tailed as above.
Synthetic workloads take the trace's arrival pattern, rate-scaled until FCFS mean JCT is
each of `--loads` x its unloaded mean (sim_policies.py uses 4.5, which keeps the engine
~99% busy); prompts are lognormal (150, CV 1).

Prints one table (metrics averaged over seeds, ratios of the averages) with the issue's
targets, writes JSON, and plots the rolling mean JCT of each policy on the switch workload.
Run: .venv/bin/python benchmarks/sim_gittins.py [--n 2000] [--seeds 0,1,2] [--loads 4.5,3]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np
import structlog

from fastserve.benchmarks.sim_policies import DEFAULT_TRACE, ENGINES, trace_rate_scale
from fastserve.runtime.sched.gittins import GittinsPolicy
from fastserve.runtime.sched.gittins_model import POOLED
from fastserve.runtime.sched.length_dist import LengthWindow
from fastserve.runtime.sched.policy import SchedulingPolicy
from fastserve.runtime.sched.registry import make_policy
from fastserve.runtime.sim.metrics import RequestRecord
from fastserve.runtime.sim.simulator import simulate
from fastserve.runtime.sim.workload import (
    Request,
    azure_workload,
    bimodal_lengths,
    describe,
    lognormal_lengths,
    make_requests,
    trace_arrivals,
    uniform_lengths,
)

POLICIES = ("fcfs", "skip-join-mlfq", "gittins", "oracle")
WORKLOADS = ("azure", "bimodal", "heavy-tailed", "switch")
MAX_TOKENS = 2048  # what every simulated request asks for
ENGINE = ENGINES["cpu-small"]
METRICS = ("jct_mean", "jct_p99", "norm_latency_mean")


def build(name: str, n: int, seed: int, load: float, trace: str) -> tuple[list[Request], float]:
    """(requests, rate scale) of one workload."""
    kw = ENGINE.sim_kwargs()
    if name == "azure":
        scale = ENGINE.azure_length_scale
        wl = azure_workload(
            trace, prompt_scale=scale, output_scale=scale, max_prompt=4096, start=seed * n, limit=n
        )
        return wl, 1.0
    rng = np.random.default_rng(seed)
    prompts = lognormal_lengths(n, 150, 1.0, rng, max_len=1000)
    heavy = lognormal_lengths(n, 100, 3.0, rng, max_len=2000)
    if name == "bimodal":
        outputs = bimodal_lengths(n, 25, 500, 0.2, rng)
    elif name == "heavy-tailed":
        outputs = heavy
    elif name == "switch":
        outputs = np.concatenate([uniform_lengths(n // 2, 50, 150, rng), heavy[n // 2 :]])
    else:
        raise ValueError(name)
    rate = trace_rate_scale((prompts, outputs), ENGINE, trace, load, **kw)
    return make_requests(trace_arrivals(trace, n, rate), prompts, outputs), rate


class PhaseKnownGittins(GittinsPolicy):
    """Gittins handed each phase's true length distribution the moment the phase starts:
    what instant learning could buy on the switch workload (a diagnostic, not deployable)."""

    def __init__(self, phases: list[tuple[float, list[int]]]) -> None:
        super().__init__(ENGINE.cost, min_completions=1, rebuild_interval=float("inf"))
        self.phases = phases  # (start time, true output lengths of the phase)
        self.phase = -1

    def priority_order(self, now: float) -> list[Any]:
        while self.phase + 1 < len(self.phases) and now >= self.phases[self.phase + 1][0]:
            self.phase += 1
            lengths = self.phases[self.phase][1]
            window = LengthWindow(len(lengths), self.model.max_output_len)
            for n in lengths:
                window.observe(n, censored=False)
            self.model.classes[POOLED].window = window
            self.rebuild(now, "phase")
        return super().priority_order(now)

    def _observe(self, entry: Any, reason: str) -> None:
        pass  # it learns nothing itself


def run(
    wl: list[Request], policy: str | SchedulingPolicy, options: dict[str, Any]
) -> tuple[dict[str, Any], list[RequestRecord]]:
    t0 = time.perf_counter()
    pol = make_policy(policy, ENGINE.cost, **options) if isinstance(policy, str) else policy
    res = simulate(wl, pol, ENGINE.cost, max_tokens=MAX_TOKENS, **ENGINE.sim_kwargs())
    out = {**res.summary, "sim_seconds": time.perf_counter() - t0, **res.extra}
    for counter in ("num_rebuilds",):
        if hasattr(pol, counter):
            out[counter] = getattr(pol, counter)
    return out, res.records


def targets(workload: str, r: dict[str, dict[str, float]]) -> list[tuple[str, float, bool]]:
    """(label, measured ratio, pass) for the issue's targets."""
    f, s, g, o = (r[p] for p in POLICIES)
    out: list[tuple[str, float, bool]] = []

    def check(label: str, value: float, limit: float) -> None:
        out.append((label, value, value <= limit))

    if workload == "azure":
        check("mean JCT <= 1.02 FCFS", g["jct_mean"] / f["jct_mean"], 1.02)
    if workload == "bimodal":
        check("mean JCT <= 0.9 FCFS", g["jct_mean"] / f["jct_mean"], 0.9)
        check("mean JCT < skip-join", g["jct_mean"] / s["jct_mean"], 1.0 - 1e-9)
    if workload == "heavy-tailed":
        check("norm latency <= 1.1 skip-join", g["norm_latency_mean"] / s["norm_latency_mean"], 1.1)
        check("p99 JCT <= 1.5 FCFS", g["jct_p99"] / f["jct_p99"], 1.5)
    check("mean JCT <= 1.15 oracle", g["jct_mean"] / o["jct_mean"], 1.15)
    return out


def rolling(records: list[RequestRecord], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(finish times, mean JCT of the last `width` completions) in finish order."""
    recs = sorted(records, key=lambda r: r.finish)
    jct = np.array([r.jct for r in recs])
    kernel = np.ones(width) / width
    return np.array([r.finish for r in recs])[width - 1 :], np.convolve(jct, kernel, "valid")


def phase_table(
    records: dict[str, list[RequestRecord]], switch_at: float, chunk: int
) -> list[dict[str, Any]]:
    """Mean JCT per policy of consecutive chunks of completions after the switch."""
    rows: list[dict[str, Any]] = []
    after = {
        p: sorted((r for r in recs if r.arrival >= switch_at), key=lambda r: r.finish)
        for p, recs in records.items()
    }
    num = min(len(v) for v in after.values())
    for start in range(0, num - chunk + 1, chunk):
        row: dict[str, Any] = {"completions": f"{start}-{start + chunk}"}
        for p, recs in after.items():
            row[p] = float(np.mean([r.jct for r in recs[start : start + chunk]]))
        rows.append(row)
    return rows


def plot_switch(records: dict[str, list[RequestRecord]], switch_at: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for policy, recs in records.items():
        x, y = rolling(recs, 200)
        ax.plot(x, y, label=policy, lw=1.3, ls=":" if policy == "gittins-known" else "-")
    ax.axvline(switch_at, color="k", ls="--", lw=1)
    ax.text(switch_at, ax.get_ylim()[1] * 0.95, " uniform -> heavy-tailed", va="top")
    ax.set_xlabel("finish time (s)")
    ax.set_ylabel("mean JCT of the last 200 completions (s)")
    ax.set_title("switch workload (cpu-small engine)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE, help="Azure conversation trace CSV")
    ap.add_argument("--n", type=int, default=2000, help="requests per workload and seed")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--loads", default="4.5,3", help="FCFS mean JCT / unloaded mean, a list")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--out", default="sim_gittins.json", help="JSON results path")
    ap.add_argument("--plot", default="sim_gittins_switch.png", help="switch workload plot")
    ap.add_argument("--verbose", action="store_true", help="show the policies' logs")
    ap.add_argument("--gittins-options", default="{}", help="JSON keyword arguments")
    args = ap.parse_args()
    gittins_options = json.loads(args.gittins_options)
    if not args.verbose:  # a table line per rebuild would drown the table
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    seeds = [int(s) for s in args.seeds.split(",")]
    loads = [float(x) for x in args.loads.split(",")]
    report: dict[str, Any] = {"args": vars(args), "engine": "cpu-small", "runs": []}
    plotted = False
    for name in args.workloads.split(","):
        for load in loads if name != "azure" else [0.0]:  # the trace keeps its own rate
            per_seed: list[dict[str, Any]] = []
            for seed in seeds:
                wl, rate = build(name, args.n, seed, load, args.trace)
                results, records = {}, {}
                for policy in POLICIES:
                    opts = gittins_options if policy == "gittins" else {}
                    results[policy], records[policy] = run(wl, policy, opts)
                entry: dict[str, Any] = {"seed": seed, "rate_scale": rate, **describe(wl)}
                entry["results"] = results
                if name == "switch":
                    switch_at = wl[args.n // 2].arrival
                    half = args.n // 2
                    known = PhaseKnownGittins(
                        [
                            (0.0, [r.output_len for r in wl[:half]]),
                            (switch_at, [r.output_len for r in wl[half:]]),
                        ]
                    )
                    results["gittins-known"], records["gittins-known"] = run(wl, known, {})
                    entry["switch_at"] = switch_at
                    entry["after_switch"] = phase_table(records, switch_at, 250)
                    if not plotted:
                        plot_switch(records, switch_at, args.plot)
                        plotted = True
                per_seed.append(entry)
            mean = {
                p: {m: float(np.mean([e["results"][p][m] for e in per_seed])) for m in METRICS}
                for p in per_seed[0]["results"]
            }
            label = name if name == "azure" else f"{name}@{load:g}"
            cv = float(np.mean([e["output_len_cv"] for e in per_seed]))
            run_report = {"workload": name, "load": load, "label": label, "output_cv": cv}
            run_report.update(per_seed=per_seed, mean=mean, targets=targets(name, mean))
            report["runs"].append(run_report)
    print_report(report["runs"], len(seeds))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {args.out} and {args.plot}")


def print_report(runs: list[dict[str, Any]], num_seeds: int) -> None:
    """One table (means over seeds; ratios of the means), then targets and the switch."""
    print(f"\ncpu-small engine, {num_seeds} seed(s); F = FCFS, S = skip-join MLFQ, O = oracle")
    print(
        f"{'workload':18s} {'CV':>5s} {'policy':15s} {'mean JCT':>9s} {'p99 JCT':>9s} "
        f"{'norm lat':>9s} {'JCT/F':>6s} {'p99/F':>6s} {'JCT/S':>6s} {'norm/S':>7s} {'JCT/O':>6s}"
    )
    for r in runs:
        mean = r["mean"]
        f, s, o = mean["fcfs"], mean["skip-join-mlfq"], mean["oracle"]
        for p, m in mean.items():
            if p not in POLICIES and r["workload"] != "switch":
                continue
            print(
                f"{r['label']:18s} {r['output_cv']:5.2f} {p:15s} {m['jct_mean']:9.2f} "
                f"{m['jct_p99']:9.2f} {m['norm_latency_mean']:9.4f} "
                f"{m['jct_mean'] / f['jct_mean']:6.3f} {m['jct_p99'] / f['jct_p99']:6.3f} "
                f"{m['jct_mean'] / s['jct_mean']:6.3f} "
                f"{m['norm_latency_mean'] / s['norm_latency_mean']:7.3f} "
                f"{m['jct_mean'] / o['jct_mean']:6.3f}"
            )
    print("\ntargets (gittins)")
    for r in runs:
        for label, value, ok in r["targets"]:
            print(f"  {r['label']:18s} {label:32s} {value:6.3f} {'PASS' if ok else 'FAIL'}")
    for r in runs:
        for e in r["per_seed"]:
            for row in e.get("after_switch", []):
                cells = " ".join(f"{p}={v:.2f}" for p, v in row.items() if p != "completions")
                print(
                    f"  {r['label']} seed {e['seed']} mean JCT of completions "
                    f"{row['completions']} after the switch: {cells}"
                )


if __name__ == "__main__":
    main()
