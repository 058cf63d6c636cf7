"""Summaries, tables and figures for `fastserve bench` and `fastserve simulate`.

A *run* is one policy at one request rate, with a "real" side (measured by the load
generator) and/or a "sim" side (the simulator), each a flat summary dict (see
`runtime.sim.metrics.summarize`) plus the JCTs of its requests for the CDF.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastserve.benchmarks.loadgen import RequestResult
from fastserve.runtime.sim.metrics import SLO_METRICS, Reservoir, summarize
from fastserve.runtime.sim.simulator import SimResult

# (summary key, header, scale): the columns of the comparison table.
COLUMNS = (
    ("jct_mean", "mean JCT s", 1.0),
    ("jct_p99", "p99 JCT s", 1.0),
    ("norm_latency_mean", "norm ms/tok", 1e3),
    ("ttft_mean", "TTFT s", 1.0),
    ("tpot_mean", "TPOT ms", 1e3),
    ("throughput_tokens_per_s", "tok/s", 1.0),
    ("preemptions", "preempt", 1.0),
    ("swaps", "swaps", 1.0),
)


def real_summary(
    results: Sequence[RequestResult],
    counters: dict[str, float],
    elapsed: float,
    *,
    itl: Reservoir | None = None,
    slo: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Metrics over the requests that got exactly their tokens (ITL over the gaps in
    `itl`, goodput under `slo`), the server's counters, and what went wrong (failures,
    wrong lengths, how late the client sent requests)."""
    ok = [r for r in results if r.ok]
    summary: dict[str, Any] = dict(summarize([r.record() for r in ok], itl=itl, slo=slo))
    summary.update({k: float(v) for k, v in counters.items()})
    summary.update(
        {
            "num_sent": len(results),
            "num_failed": len(results) - len(ok),
            "num_wrong_length": sum(
                1 for r in results if r.error is None and r.output_tokens != r.expected_output
            ),
            "max_send_lag_s": max((r.arrival - r.scheduled for r in results), default=0.0),
            "elapsed_s": elapsed,
            # Target: iterations wait on KV copies for under 5% of the run.
            "swap_wait_fraction": counters.get("swap_wait_seconds", 0.0) / elapsed
            if elapsed > 0
            else 0.0,
            "jcts": [r.finish - r.arrival for r in ok if r.finish is not None],
        }
    )
    return summary


def sim_summary(res: SimResult, wall_seconds: float) -> dict[str, Any]:
    """The simulator's metrics in the same shape as `real_summary`."""
    return {
        **res.summary,
        "offloads": float(res.extra.get("num_offloads", 0)),
        "uploads": float(res.extra.get("num_uploads", 0)),
        "recomputes": float(res.num_recomputes),
        "blocks_swapped": res.blocks_swapped,
        "unfinished": res.unfinished,
        "iterations": res.num_iterations,
        "sim_wall_s": wall_seconds,
        **{k: v for k, v in res.extra.items() if k.startswith("num_")},
        "jcts": [r.jct for r in res.records],
    }


def _cell(value: Any, scale: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value) * scale
    return f"{v:.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


# (summary key, header, reference policy): ratios to a reference at the same rate and side,
# the targets for skip-join MLFQ.
RATIOS = (
    ("jct_mean", "JCT/fcfs", "fcfs"),
    ("jct_p99", "p99/fcfs", "fcfs"),
    ("norm_latency_mean", "norm/fcfs", "fcfs"),
    ("norm_latency_mean", "norm/oracle", "oracle"),
)


def comparison_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per (rate, policy, side): the real run and its simulation on adjacent rows,
    then ratios to FCFS and to the oracle at the same rate and side."""
    policies = {run["policy"] for run in runs}
    ratios = [r for r in RATIOS if r[2] in policies]
    head = ["policy", "rate", "side", *(t for _, t, _ in COLUMNS), *(t for _, t, _ in ratios)]
    ref = {
        (run["rate"], side, run["policy"]): run[side]
        for run in runs
        for side in ("real", "sim")
        if side in run
    }
    rows, last_rate = [head], None
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["rate"] or 0.0, i))
    for run in (runs[i] for i in order):
        if last_rate is not None and run["rate"] != last_rate:
            rows.append([""] * len(head))
        last_rate = run["rate"]
        for side in ("real", "sim"):
            if side not in run:
                continue
            s = run[side]
            row = [run["policy"], _cell(run["rate"], 1.0), side]
            row += [_cell(s.get(key), scale) for key, _, scale in COLUMNS]
            for key, _, policy in ratios:
                base = ref.get((run["rate"], side, policy), {}).get(key)
                row.append(_cell(s[key] / base, 1.0) if base else "-")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def single_table(summary: dict[str, Any]) -> str:
    """A one-run report: each metric's mean, median, p90 and p99, then totals."""
    lines = [f"{'metric':30s} {'mean':>9s} {'median':>9s} {'p90':>9s} {'p99':>9s}"]
    for prefix, title, scale in (
        ("jct", "E2EL = JCT (s)", 1.0),
        ("ttft", "TTFT (ms)", 1e3),
        ("tpot", "TPOT (ms)", 1e3),
        ("itl", "ITL (ms)", 1e3),
        ("norm_latency", "JCT/token (ms)", 1e3),
    ):
        if f"{prefix}_mean" not in summary:
            continue  # e.g. ITL of a run that did not time its chunks
        cells = [
            _cell(summary.get(f"{prefix}_{s}"), scale) for s in ("mean", "median", "p90", "p99")
        ]
        lines.append(f"{title:30s} " + " ".join(f"{c:>9s}" for c in cells))
    for key in (
        "num_requests", "num_failed", "throughput_requests_per_s", "goodput_requests_per_s",
        "throughput_tokens_per_s", "throughput_total_tokens_per_s", "preemptions", "swaps",
        "offloads", "uploads", "recomputes", "elapsed_s", "max_send_lag_s", "busy_seconds",
        "swap_wait_seconds", "swap_wait_fraction",
    ):  # fmt: skip
        if key in summary:
            lines.append(f"{key:30s} {_cell(summary[key], 1.0):>9s}")
    slos = [f"{m} <= {summary[f'slo_{m}_s'] * 1e3:g} ms" for m in SLO_METRICS
            if f"slo_{m}_s" in summary]  # fmt: skip
    if slos:
        lines.append(f"{'goodput SLOs':30s} {', '.join(slos)}")
    return "\n".join(lines)


def compact_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs without per-request lists (JCTs, request results), for a short JSON."""
    per_request = ("jcts", "requests")
    return [
        {
            k: {kk: vv for kk, vv in v.items() if kk not in per_request}
            if isinstance(v, dict)
            else v
            for k, v in run.items()
        }
        for run in runs
    ]


def write_figure(path: str | Path, runs: Sequence[dict[str, Any]], title: str = "") -> Path:
    """PNG: JCT CDF per policy (at the highest rate), and, with several rates, mean and p99
    JCT against the request rate. Real runs are solid lines, simulated ones dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rates = sorted({run["rate"] for run in runs if run["rate"] is not None})
    policies = list(dict.fromkeys(run["policy"] for run in runs))
    ncols = 3 if len(rates) > 1 else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2), squeeze=False)
    colours = {p: f"C{i}" for i, p in enumerate(policies)}
    styles = {"real": "-", "sim": "--"}
    cdf_rate = rates[-1] if rates else None
    ax = axes[0][0]
    for run in runs:
        if run["rate"] != cdf_rate:
            continue
        for side, style in styles.items():
            jcts = np.sort(np.asarray(run.get(side, {}).get("jcts", []), dtype=float))
            if jcts.size:
                y = np.arange(1, jcts.size + 1) / jcts.size
                ax.plot(
                    jcts, y, style, color=colours[run["policy"]], label=f"{run['policy']} {side}"
                )
    ax.set_xscale("log")
    ax.set_xlabel("JCT (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("JCT CDF" + (f" at {cdf_rate:.3g} req/s" if cdf_rate else ""))
    ax.legend(fontsize=7)
    for ax, key, label in ((axes[0][1], "jct_mean", "mean JCT (s)"), (axes[0][2], "jct_p99", "p99 JCT (s)")) if ncols == 3 else ():  # fmt: skip
        for policy in policies:
            for side, style in styles.items():
                pts = sorted(
                    (run["rate"], run[side][key])
                    for run in runs
                    if run["policy"] == policy and side in run and run["rate"] is not None
                )
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(
                        xs, ys, style, marker="o", color=colours[policy], label=f"{policy} {side}"
                    )
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    return save_figure(fig, path, title, ncols)


def save_figure(fig: Any, path: str | Path, title: str, panels_wide: int) -> Path:
    """Title (wrapped to the figure's width), lay out, write the PNG, free the figure."""
    import textwrap

    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(textwrap.fill(title, 75 * panels_wide), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(path: str | Path, report: Any) -> Path:
    """Write a benchmark's JSON report (its folder created) and say where it went."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return out
