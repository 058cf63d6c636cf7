"""Decode throughput of our engine (ModelRunner) next to transformers' own `generate`.

Same model, dtype, batch and prompt lengths; every job is forced to generate exactly
--new-tokens tokens (min_tokens / min_new_tokens). Runs alternate between the two engines
and each figure is the best of --repeats runs, so a noisy neighbour on a shared machine
hurts both sides alike. Prints a table and writes JSON (--out).

    .venv/bin/python benchmarks/bench_decode.py --batch-sizes 1,8,32
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import asdict, dataclass

import torch

from fastserve.benchmarks.bench_report import write_report
from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.registry import resolve_model_dir
from fastserve.runtime.model.runner import BatchEntry, ModelRunner, resolve_dtype


@dataclass
class Timing:
    prefill_s: float  # first forward (prompt + first token)
    total_s: float  # prompt to last token

    def decode_tps(self, batch: int, new_tokens: int) -> float:
        return batch * (new_tokens - 1) / (self.total_s - self.prefill_s)

    def e2e_tps(self, batch: int, new_tokens: int) -> float:
        return batch * new_tokens / self.total_s


def make_prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    # Skip the first ids: control tokens in SmolLM2's vocabulary.
    return torch.randint(100, vocab, (batch, length), generator=gen).tolist()


def run_ours(runner: ModelRunner, prompts: list[list[int]], new_tokens: int) -> Timing:
    params = SamplingParams(temperature=0.0, min_tokens=new_tokens, ignore_eos=True)
    per_job = -(-(len(prompts[0]) + new_tokens) // runner.block_size)
    entries = [
        BatchEntry(f"j{i}", p, 0, list(range(i * per_job, (i + 1) * per_job)), True, params, 0)
        for i, p in enumerate(prompts)
    ]
    start = time.perf_counter()
    out = runner.execute(entries)
    prefill = time.perf_counter() - start
    for step in range(1, new_tokens):
        entries = [
            BatchEntry(
                e.request_id,
                [s.token_id],
                e.start_pos + len(e.token_ids),
                e.block_table,
                True,
                params,
                step,
            )
            for e, s in zip(entries, out, strict=True)
        ]
        out = runner.execute(entries)
    return Timing(prefill, time.perf_counter() - start)


def run_hf(model, prompts: list[list[int]], new_tokens: int) -> Timing:
    ids = torch.tensor(prompts, device=model.device)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
        total = time.perf_counter() - start
    return Timing(prefill, total)


def best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.total_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="HF model dir (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--out", default="bench_results/decode.json")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    per_job = -(-(args.prompt_len + args.new_tokens) // args.block_size)
    runner = ModelRunner(
        model_dir, args.dtype, args.device, max(batches) * per_job, args.block_size
    )
    hf = None
    if not args.skip_hf:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=resolve_dtype(args.dtype))
        hf = hf.to(runner.device).eval()

    rows = []
    for batch in batches:
        prompts = make_prompts(batch, args.prompt_len, runner.vocab_size, seed=batch)
        run_ours(runner, prompts, 4)  # warm-up
        if hf is not None:
            run_hf(hf, prompts, 4)
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(run_ours(runner, prompts, args.new_tokens))
            if hf is not None:
                theirs.append(run_hf(hf, prompts, args.new_tokens))
        row = {"batch": batch, "ours": asdict(best(ours))}
        row["ours_decode_tps"] = best(ours).decode_tps(batch, args.new_tokens)
        row["ours_e2e_tps"] = best(ours).e2e_tps(batch, args.new_tokens)
        if theirs:
            row["hf"] = asdict(best(theirs))
            row["hf_decode_tps"] = best(theirs).decode_tps(batch, args.new_tokens)
            row["hf_e2e_tps"] = best(theirs).e2e_tps(batch, args.new_tokens)
            row["decode_speedup"] = row["ours_decode_tps"] / row["hf_decode_tps"]
        rows.append(row)
        _print_row(row)

    result = {
        "model": str(model_dir),
        "dtype": args.dtype,
        "device": str(runner.device),
        "threads": torch.get_num_threads(),
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
    write_report(args.out, result)


_HEADER_DONE = False


def _print_row(row: dict) -> None:
    global _HEADER_DONE
    if not _HEADER_DONE:
        print(
            f"{'batch':>5} | {'ours decode tok/s':>17} | {'hf decode tok/s':>15} | "
            f"{'speedup':>7} | {'ours e2e tok/s':>14} | {'hf e2e tok/s':>12}"
        )
        _HEADER_DONE = True
    hf_dec = f"{row['hf_decode_tps']:.1f}" if "hf" in row else "-"
    hf_e2e = f"{row['hf_e2e_tps']:.1f}" if "hf" in row else "-"
    speed = f"{row['decode_speedup']:.2f}x" if "hf" in row else "-"
    print(
        f"{row['batch']:>5} | {row['ours_decode_tps']:>17.1f} | {hf_dec:>15} | {speed:>7} | "
        f"{row['ours_e2e_tps']:>14.1f} | {hf_e2e:>12}",
        flush=True,
    )


if __name__ == "__main__":
    main()
