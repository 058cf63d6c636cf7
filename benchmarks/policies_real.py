"""The issue's real benchmark: every policy on the real server, for each workload preset,
with the simulation beside it, then the issue's target checks on both sides.

For each preset (heavy-tailed, azure, long-prompts; see deploy/loadgen_workload.py) it
runs `fastserve bench --compare-policies fcfs,mlfq,skip-join-mlfq,oracle` at the rate where
simulated FCFS mean JCT is --target-load x its unloaded mean (all policies: same batch
limit, small device KV pool plus a host pool), writes <out-dir>/<preset>.json/.png, and
prints PASS/FAIL per target. Profile first so the servers and the simulator share the cost
model (`fastserve profile --threads 1`); on a 2-core CPU pass --server-threads 1.

    .venv/bin/python benchmarks/policies_real.py --num-requests 100 --server-threads 1 \
        [-- any other `fastserve bench` flags, e.g. --num-device-blocks 64]

Time on a 2-core CPU with SmolLM2-135M: ~1 minute per policy per 60 requests at load 4,
so the default 3 presets x 4 policies x 100 requests take roughly 20-25 minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fastserve.deploy.cli import main as fastserve_main

POLICIES = "fcfs,mlfq,skip-join-mlfq,oracle"


def targets(preset: str, by_policy: dict[str, dict[str, Any]]) -> list[tuple[str, bool]]:
    """The issue's targets for skip-join MLFQ on one side (real or sim) of one preset."""
    f, s = by_policy.get("fcfs"), by_policy.get("skip-join-mlfq")
    o, m = by_policy.get("oracle"), by_policy.get("mlfq")
    if f is None or s is None:
        return []
    checks: list[tuple[str, bool]] = []
    if preset == "heavy-tailed":
        checks += [
            ("norm latency <= 1/3 FCFS", s["norm_latency_mean"] <= f["norm_latency_mean"] / 3),
            ("mean JCT <= 0.75 FCFS", s["jct_mean"] <= 0.75 * f["jct_mean"]),
            ("p99 JCT <= 1.5 FCFS", s["jct_p99"] <= 1.5 * f["jct_p99"]),
        ]
        if o is not None:
            ok = s["norm_latency_mean"] <= 1.3 * o["norm_latency_mean"]
            checks.append(("norm latency <= 1.3 oracle", ok))
    elif preset == "azure":
        checks.append(("mean JCT <= 1.1 FCFS", s["jct_mean"] <= 1.1 * f["jct_mean"]))
    elif preset == "long-prompts" and m is not None:
        checks.append(("mean JCT < plain MLFQ", s["jct_mean"] < m["jct_mean"]))
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
    ap.add_argument("--presets", default="heavy-tailed,azure,long-prompts")
    ap.add_argument("--policies", default=POLICIES)
    ap.add_argument("--num-requests", type=int, default=100)
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
            by_policy = {r["policy"]: r[side] for r in report["runs"] if side in r}
            checks[preset][side] = targets(preset, by_policy)
    print("\n=== targets (skip-join MLFQ)")
    for preset, sides in checks.items():
        for side, results in sides.items():
            for label, ok in results:
                print(f"{preset:13s} {side:4s} {label:28s} {'PASS' if ok else 'FAIL'}")
    summary = Path(args.out_dir) / "targets.json"
    summary.write_text(json.dumps(checks, indent=1))
    print(f"wrote {summary}")


if __name__ == "__main__":
    main()
