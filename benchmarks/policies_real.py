"""The issue's real benchmark: every policy on the real server, for each workload preset,
with the simulation beside it, then the issue's target checks on both sides.

For each preset (heavy-tailed, azure, long-prompts, bimodal; see
benchmarks/workload_options.py) it runs `fastserve bench --compare-policies POLICIES` at the
rate where simulated FCFS mean
JCT is --target-load x its unloaded mean (all policies: same batch limit, small device KV
pool plus a host pool), writes <out-dir>/<preset>.json/.png, and prints PASS/FAIL per
target of skip-join MLFQ (issue 3) and of the Gittins policy (issue 5). Profile first so the
servers and the simulator share the cost model (`fastserve profile --threads 1`); on a
2-core CPU pass --server-threads 1.

    .venv/bin/python benchmarks/policies_real.py --presets heavy-tailed --num-requests 200 \
        [-- any other `fastserve bench` flags, e.g. --num-device-blocks 64]

Time on a 2-core CPU with SmolLM2-135M: 2-3 minutes per policy per 200 requests at load 4.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fastserve.deploy.cli import main as fastserve_main

POLICIES = "fcfs,mlfq,skip-join-mlfq,oracle,gittins:ignore_max_tokens=true"


def _ratio_check(label: str, value: float, limit: float, strict: bool = False) -> tuple[str, bool]:
    ok = value < limit if strict else value <= limit
    return f"{label} ({value:.3g} {'<' if strict else '<='} {limit:.3g})", ok


def targets(preset: str, by_policy: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    """The issues' targets on one side (real or sim) of one preset: skip-join MLFQ's
    (issue 3) and the Gittins policy's (issue 5), each where its rows are present.
    `by_policy` is keyed by policy name (options dropped)."""
    f, s = by_policy.get("fcfs"), by_policy.get("skip-join-mlfq")
    o, m, g = by_policy.get("oracle"), by_policy.get("mlfq"), by_policy.get("gittins")
    if f is None:
        return []
    checks: list[tuple[str, bool]] = []
    if s is not None and preset == "heavy-tailed":
        checks += [
            _ratio_check("SJ norm/FCFS", s["norm_latency_mean"] / f["norm_latency_mean"], 1 / 3),
            _ratio_check("SJ JCT/FCFS", s["jct_mean"] / f["jct_mean"], 0.75),
            _ratio_check("SJ p99/FCFS", s["jct_p99"] / f["jct_p99"], 1.5),
        ]
        if o is not None:
            ratio = s["norm_latency_mean"] / o["norm_latency_mean"]
            checks.append(_ratio_check("SJ norm/oracle", ratio, 1.3))
    if s is not None and preset == "azure":
        checks.append(_ratio_check("SJ JCT/FCFS", s["jct_mean"] / f["jct_mean"], 1.1))
    if s is not None and m is not None and preset == "long-prompts":
        checks.append(_ratio_check("SJ JCT/plain MLFQ", s["jct_mean"] / m["jct_mean"], 1, True))
    if g is not None:
        jf = g["jct_mean"] / f["jct_mean"]
        if preset == "azure":
            checks.append(_ratio_check("Gittins JCT/FCFS", jf, 1.02))
        if preset == "bimodal":
            checks.append(_ratio_check("Gittins JCT/FCFS", jf, 0.9))
            if s is not None:
                ratio = g["jct_mean"] / s["jct_mean"]
                checks.append(_ratio_check("Gittins JCT/SJ", ratio, 1, True))
        if preset == "heavy-tailed":
            checks.append(_ratio_check("Gittins p99/FCFS", g["jct_p99"] / f["jct_p99"], 1.5))
            if s is not None:
                ratio = g["norm_latency_mean"] / s["norm_latency_mean"]
                checks.append(_ratio_check("Gittins norm/SJ", ratio, 1.1))
        if o is not None:
            checks.append(_ratio_check("Gittins JCT/oracle", g["jct_mean"] / o["jct_mean"], 1.15))
    return checks


def run_preset(preset: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    out = Path(args.out_dir) / f"{preset}.json"
    argv = [
        "bench",
        "--compare-policies",
        args.policies,
        "--preset",
        preset,
        "--num-requests",
        str(args.num_requests),
        "--target-load",
        str(args.target_load),
        "--server-threads",
        str(args.server_threads),
        "--out",
        str(out),
        *extra,
    ]
    print(f"\n=== {preset}: fastserve {' '.join(argv)}", flush=True)
    try:
        fastserve_main(argv)
    except SystemExit as done:  # the CLI exits with the command's status
        if done.code:
            print(f"{preset}: fastserve bench exited with {done.code} (failed requests?)")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="heavy-tailed,azure,long-prompts,bimodal")
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--num-requests", type=int, default=300)
    ap.add_argument("--target-load", type=float, default=4.0, help="FCFS JCT / unloaded JCT")
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--out-dir", default="bench_results/policies_real")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    checks: dict[str, dict[str, list[tuple[str, bool]]]] = {}
    for preset in args.presets.split(","):
        report = run_preset(preset, args, extra)
        checks[preset] = {}
        for side in ("real", "sim"):
            by_policy = {
                r["policy"].split(":")[0]: r[side] for r in report["runs"] if side in r
            }
            checks[preset][side] = targets(preset, by_policy)
    print("\n=== targets (SJ: skip-join MLFQ, issue 3; Gittins: issue 5)")
    for preset, sides in checks.items():
        for side, results in sides.items():
            for label, ok in results:
                print(f"{preset:13s} {side:4s} {label:40s} {'PASS' if ok else 'FAIL'}")
    summary = Path(args.out_dir) / "targets.json"
    # Runs of other presets into the same folder keep their results.
    merged = json.loads(summary.read_text()) if summary.exists() else {}
    summary.write_text(json.dumps({**merged, **checks}, indent=1))
    print(f"wrote {summary}")


if __name__ == "__main__":
    main()
