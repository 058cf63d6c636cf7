"""Engine step times with the C kernels on and off (same process, alternating).

For each batch size: the median time of a decode step (every job one token, contexts of
--context tokens), and the time to prefill a --prefill-len prompt in --chunk chunks; each
figure measured with the kernels (quantized weights where the checkpoint has them) and
with torch ops only, in alternating rounds so machine drift hits both. Also the machine's
bounds: weight bytes a decode step reads, over measured memory bandwidth. Prints a table
and writes JSON (--out).

    .venv/bin/python benchmarks/bench_kernels.py --batch-sizes 1,4,16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.cpu_kernels import CpuKernels
from fastserve.runtime.model.registry import resolve_model_dir
from fastserve.runtime.model.runner import BatchEntry, ModelRunner

GREEDY = SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=1 << 20)


def _runner(model: Path, kernels: bool, blocks: int) -> ModelRunner:
    load = CpuKernels.load
    if not kernels:
        CpuKernels.load = classmethod(lambda cls: None)  # type: ignore[method-assign]
    try:
        return ModelRunner(model, "float32", "cpu", num_device_blocks=blocks, block_size=16)
    finally:
        CpuKernels.load = load  # type: ignore[method-assign]


def decode_step_s(runner: ModelRunner, batch: int, context: int, steps: int) -> float:
    per_job = -(-(context + steps + 1) // 16)
    tables = [list(range(i * per_job, (i + 1) * per_job)) for i in range(batch)]
    prompts = [[100 + (i * 31 + j) % 40000 for j in range(context)] for i in range(batch)]
    for i, p in enumerate(prompts):  # prefill one at a time: only decode steps are timed
        runner.execute([BatchEntry(f"j{i}", p, 0, tables[i], True, GREEDY, 0)])
    times = []
    for step in range(steps):
        entries = [
            BatchEntry(f"j{i}", [7 + i], context + step, tables[i], True, GREEDY, step + 1)
            for i in range(batch)
        ]
        start = time.perf_counter()
        runner.execute(entries)
        times.append(time.perf_counter() - start)
    for i in range(batch):
        runner.release(f"j{i}")
    return statistics.median(times)


def prefill_s(runner: ModelRunner, length: int, chunk: int) -> float:
    table = list(range(-(-length // 16)))
    prompt = [100 + (j * 7) % 40000 for j in range(length)]
    start = time.perf_counter()
    for s in range(0, length, chunk):
        part = prompt[s : s + chunk]
        runner.execute([BatchEntry("p", part, s, table, s + chunk >= length, GREEDY, 0)])
    runner.release("p")
    return time.perf_counter() - start


def read_bandwidth_gbs() -> float:
    """Single-pass read bandwidth over a buffer far larger than the caches."""
    buf = torch.ones(256 * 1024 * 1024 // 4)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - start)
    return buf.numel() * 4 / best / 1e9


def decode_weight_bytes(runner: ModelRunner) -> int:
    """Bytes of weights one decode step reads (quantized copies where used)."""
    total = 0
    linears = [runner.model.lm_head] + [
        p
        for layer in runner.model.layers
        for p in (layer.qkv, layer.o_proj, layer.gate_up, layer.down)
    ]
    for lin in linears:
        if lin is None:
            continue
        q = lin.quant
        if q is not None:
            total += sum(t.numel() * t.element_size() for t in (q.qs, q.d, q.m) if t is not None)
        else:
            total += lin.out_features * lin.in_features * 4
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-sizes", default="1,2,4,8,16")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--prefill-len", type=int, default=1002)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench_results/bench_kernels.json")
    args = ap.parse_args()
    model = resolve_model_dir(args.model)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    blocks = max(batches) * (-(-(args.context + args.steps + 1) // 16)) + 80
    runners = {True: _runner(model, True, blocks), False: _runner(model, False, blocks)}
    if runners[True].model.kernels is None:
        raise SystemExit("the C kernels cannot run on this machine (see kernels/build.py)")
    results: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for kernels in (True, False):
            name = "kernels" if kernels else "torch"
            row = results.setdefault(name, {})
            for b in batches:
                t = decode_step_s(runners[kernels], b, args.context, args.steps)
                row.setdefault(f"decode_b{b}", []).append(t)
            t = prefill_s(runners[kernels], args.prefill_len, args.chunk)
            row.setdefault("prefill", []).append(t)
    bandwidth = read_bandwidth_gbs()
    best = {k: {m: min(v) for m, v in row.items()} for k, row in results.items()}
    print(f"{'figure':<14}{'kernels ms':>12}{'torch ms':>12}{'ratio':>8}")
    for metric in best["kernels"]:
        a, b = best["kernels"][metric] * 1e3, best["torch"][metric] * 1e3
        print(f"{metric:<14}{a:>12.1f}{b:>12.1f}{b / a:>8.2f}")
    weights = {k: decode_weight_bytes(r) for k, r in runners.items()}
    for kernels, nbytes in weights.items():
        bound = nbytes / (bandwidth * 1e9) * 1e3
        print(f"{'kernels' if kernels else 'torch'}: decode reads {nbytes / 1e6:.0f} MB of weights; "
              f"at {bandwidth:.1f} GB/s that is a {bound:.1f} ms bound per step")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(model), "context": args.context, "prefill_len": args.prefill_len,
        "chunk": args.chunk, "threads": torch.get_num_threads(), "read_bandwidth_gbs": bandwidth,
        "weight_bytes": {"kernels": weights[True], "torch": weights[False]},
        "best_s": best, "all_s": results,
    }  # fmt: skip
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
