"""FastServe against a peer server (e.g. vLLM's CPU build), side by side, A B A B.

Both servers must already be running on loopback and serving the same weights (see the
README's "Benchmarks" section for the peer's set-up; the peer is never a dependency). Each
pair runs every section on A, then on B, so machine drift between pairs cancels in the
ratios. Both servers cache prompt prefixes (FastServe by default, vLLM's automatic prefix
caching), so every pair draws fresh prompt tokens (A and B get the same ones) and each
1k-token TTFT probe is new: no figure is a cache hit. Sections:

- single: one stream, a short prompt, `--single-tokens` forced output tokens; tokens/s
  after the first token.
- burst: `--burst` requests at once (prompts ~100 tokens, forced outputs uniform in
  1..256); output tokens/s over the burst.
- ttft1k: one 1,002-token prompt with one output token; seconds to that token.
- loaded: a workload preset (default `code`) at a fixed request rate; mean and p99 JCT.

Requests are greedy unless `--temperature T [--top-p P]` samples the single, burst and
loaded sections the way users' clients do (the sampler's cost then counts too).

Prints one row per figure (A median, B median, A/B per pair, its median) and writes JSON:

    python benchmarks/peer_compare.py --a http://127.0.0.1:8000 --b http://127.0.0.1:8101
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from fastserve.benchmarks.loadgen import RequestResult, replay
from fastserve.benchmarks.workload_build import build_workload
from fastserve.benchmarks.workload_options import BASE, PRESETS
from fastserve.runtime.sim.workload import Request

SECTIONS = ("single", "burst", "ttft1k", "loaded")


def _ok(results: list[RequestResult]) -> list[RequestResult]:
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0].error}")
    return results


async def single_stream(
    url: str, tokens: int, seed: int, sampling: dict[str, float] | None = None
) -> dict[str, float]:
    work = [Request(0.0, 32, tokens)]
    (r,), _, _ = await replay(url, work, progress=False, seed=seed, sampling=sampling)
    _ok([r])
    assert r.first_token is not None and r.finish is not None
    return {"single_tok_s": (tokens - 1) / (r.finish - r.first_token)}


async def burst(
    url: str, n: int, seed: int, sampling: dict[str, float] | None = None
) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    work = [
        Request(0.0, int(p), int(o))
        for p, o in zip(rng.integers(80, 121, n), rng.integers(1, 257, n), strict=True)
    ]
    results, _, elapsed = await replay(url, work, progress=False, seed=seed, sampling=sampling)
    _ok(results)
    return {"burst_out_tok_s": sum(r.output_tokens for r in results) / elapsed}


async def ttft_1k(url: str, seed: int, repeats: int = 2) -> dict[str, float]:
    times = []
    for i in range(repeats):
        work = [Request(0.0, 1002, 1)]
        (r,), _, _ = await replay(url, work, progress=False, warmup=1, seed=seed * 100 + i)
        _ok([r])
        assert r.first_token is not None
        times.append(r.first_token - r.arrival)
    return {"ttft_1k_s": min(times)}


async def loaded(
    url: str, work: list[Request], seed: int, sampling: dict[str, float] | None = None
) -> dict[str, float]:
    # A slow peer can take many minutes to drain an overload: no request is cut off early.
    results, _, elapsed = await replay(
        url, work, progress=False, request_timeout=3600.0, seed=seed, sampling=sampling
    )
    _ok(results)
    jcts = [r.finish - r.arrival for r in results if r.finish is not None]
    return {
        "loaded_jct_mean_s": float(np.mean(jcts)),
        "loaded_jct_p99_s": float(np.percentile(jcts, 99)),
        "loaded_out_tok_s": sum(r.output_tokens for r in results) / elapsed,
    }


def loaded_workload(preset: str, num_requests: int, rate: float, seed: int) -> list[Request]:
    w = {**BASE, **PRESETS[preset], "preset": preset, "seed": seed}
    w["num_requests"] = num_requests
    w.setdefault("trace", None)
    return build_workload(w, rate=rate)


async def run_sections(
    url: str, args: argparse.Namespace, work: list[Request], pair: int
) -> dict[str, float]:
    seed = args.seed + 1000 * (pair + 1)  # fresh prompt tokens per pair, same for A and B
    out: dict[str, float] = {}
    sampling = sampling_fields(args)
    if "single" in args.sections:
        out |= await single_stream(url, args.single_tokens, seed, sampling)
    if "burst" in args.sections:
        out |= await burst(url, args.burst, seed, sampling)
    if "ttft1k" in args.sections:
        out |= await ttft_1k(url, seed)
    if "loaded" in args.sections:
        out |= await loaded(url, work, seed, sampling)
    return out


def sampling_fields(args: argparse.Namespace) -> dict[str, float] | None:
    """The generation sections' sampling fields: greedy unless --temperature is given."""
    if args.temperature is None:
        return None
    return {"temperature": args.temperature, "top_p": args.top_p}


def table(pairs: list[tuple[dict[str, float], dict[str, float]]], a: str, b: str) -> str:
    keys = list(pairs[0][0])
    lines = [f"{'figure':<20} {a:>12} {b:>12} {'A/B per pair':>28} {'A/B median':>11}"]
    for k in keys:
        ratios = [x[k] / y[k] for x, y in pairs]
        per_pair = " ".join(f"{r:.2f}" for r in ratios)
        lines.append(
            f"{k:<20} {statistics.median(x[k] for x, _ in pairs):>12.3f} "
            f"{statistics.median(y[k] for _, y in pairs):>12.3f} {per_pair:>28} "
            f"{statistics.median(ratios):>11.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--a", required=True, help="server A (FastServe)")
    p.add_argument("--b", required=True, help="server B (the peer)")
    p.add_argument("--a-name", default="fastserve")
    p.add_argument("--b-name", default="peer")
    p.add_argument("--pairs", type=int, default=2, help="A B rounds")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of sections")
    p.add_argument("--single-tokens", type=int, default=200)
    p.add_argument("--burst", type=int, default=32)
    p.add_argument("--preset", default="code", choices=sorted(PRESETS))
    p.add_argument("--num-requests", type=int, default=300)
    p.add_argument("--rate", type=float, default=5.08, help="loaded section, req/s (code preset: 3x "
                   "FastServe's capacity on 2 cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None, help="sample the single, burst "
                   "and loaded sections at this temperature (default: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="with --temperature (e.g. 0.9)")
    p.add_argument("--out", default="bench_results/peer_compare.json")
    args = p.parse_args()
    if args.temperature is None and args.top_p != 1.0:
        p.error("--top-p needs --temperature (without it every request is greedy)")
    args.sections = [s for s in args.sections.split(",") if s]
    if unknown := set(args.sections) - set(SECTIONS):
        raise SystemExit(f"unknown sections {sorted(unknown)}; known: {SECTIONS}")
    work = loaded_workload(args.preset, args.num_requests, args.rate, args.seed)
    pairs = []
    for i in range(args.pairs):
        ra = asyncio.run(run_sections(args.a, args, work, i))
        rb = asyncio.run(run_sections(args.b, args, work, i))
        pairs.append((ra, rb))
        print(f"pair {i + 1}: A {ra}\n        B {rb}", flush=True)
    print(table(pairs, args.a_name, args.b_name))
    out: dict[str, Any] = {"args": vars(args), "pairs": pairs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
