"""`fastserve profile`: measure the engine's iteration times and cache the cost model.

Prefill time is measured by prompt tokens (one prompt alone) and decode-iteration time by
batch size and context, through `ModelRunner.execute` over fresh block tables, and fitted
with `runtime.sched.cost_model.profile`. The result goes where `fastserve serve` looks for
it (`profile_cache.profile_path`), so the scheduler's skip-join levels and per-job service
shares use this machine's numbers instead of the built-in defaults.

Defaults keep the run short on a small CPU (prefill up to 1024 tokens, batch up to 32):
about 30 s for SmolLM2-135M with one thread. On a shared 2-core machine, two torch threads
fighting other processes for the cores ran ~10x slower and erratic: profile (and serve)
with `--threads 1` / OMP_NUM_THREADS=1 there.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

from fastserve.deploy.serve import PROFILE_PREFILL_SIZES, resolve_device_dtype
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.sched.cost_model import CostModel, profile
from fastserve.runtime.sched.profile_cache import find_cost_model, profile_path


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF Llama-family dir (default: SmolLM2-135M)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--prefill-sizes", type=_ints, default=list(PROFILE_PREFILL_SIZES))
    p.add_argument("--batch-sizes", type=_ints, default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--context-lens", type=_ints, default=[32, 256])
    p.add_argument("--repeats", type=int, default=3, help="measurements per point (median)")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default, as `serve` uses; match the server's setting)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default: the cache `serve` reads)")
    p.set_defaults(func=run)


def server_config(model: str | None, dtype: str, device: str, convert: bool = True) -> ServerConfig:
    """The config fields `profile_path` keys on, resolved the way `fastserve serve` does.
    `convert=False` names the default model's directory without converting it."""
    from fastserve.runtime.model.registry import (
        DEFAULT_MODEL_NAME,
        default_model_dir,
        resolve_model_dir,
    )

    cfg = ServerConfig()
    if not convert and model in (None, "", DEFAULT_MODEL_NAME):
        cfg.model = str(default_model_dir(convert=False))
    else:
        cfg.model = str(resolve_model_dir(model))
    cfg.device, cfg.dtype = resolve_device_dtype(device, dtype)
    return cfg


def cached_cost_model(
    path: str | None = None,
    model: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> tuple[CostModel, str]:
    """`find_cost_model` for command-line flags: `path`, else the cached profile of the
    model named (resolved the way `serve` does), else the built-in default. Never converts
    or loads a model (only resolves its directory)."""
    if path:
        return find_cost_model(None, path)
    try:
        cfg = server_config(model, dtype, device, convert=False)
    except FileNotFoundError:  # model not present: nothing can have been profiled
        cfg = None
    return find_cost_model(cfg)


class _Recorder:
    """A `RunBatch` over a ModelRunner that also keeps every measurement for the table."""

    def __init__(self, runner: object, seed: int) -> None:
        import torch

        self.runner = runner
        self.gen = torch.Generator().manual_seed(seed)
        self.points: list[tuple[list[int], list[int], float]] = []
        self._n = 0

    def __call__(self, new_tokens: list[int], context_lens: list[int]) -> float:
        import torch

        from fastserve.protocol.common import SamplingParams
        from fastserve.runtime.model.runner import BatchEntry

        runner = self.runner
        bs = runner.block_size  # type: ignore[attr-defined]
        vocab = runner.vocab_size  # type: ignore[attr-defined]
        low = min(100, vocab // 2)  # skip control tokens at the start of the vocabulary
        greedy = SamplingParams(temperature=0.0, ignore_eos=True)
        entries, next_block = [], 0
        for n, ctx in zip(new_tokens, context_lens, strict=True):
            # Fresh, disjoint block tables: the KV content is irrelevant to the timing.
            blocks = -(-(ctx + n) // bs)
            table = list(range(next_block, next_block + blocks))
            next_block += blocks
            ids = torch.randint(low, vocab, (n,), generator=self.gen).tolist()
            self._n += 1
            entries.append(BatchEntry(f"p{self._n}", ids, ctx, table, True, greedy, 0))
        start = time.perf_counter()
        runner.execute(entries)  # type: ignore[attr-defined]
        if runner.device.type == "cuda":  # type: ignore[attr-defined]
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        for e in entries:
            runner.release(e.request_id)  # type: ignore[attr-defined]
        self.points.append((list(new_tokens), list(context_lens), seconds))
        return seconds


def measure(args: argparse.Namespace, cfg: ServerConfig) -> tuple[CostModel, _Recorder]:
    import torch

    from fastserve.runtime.model.runner import ModelRunner

    if args.threads:
        torch.set_num_threads(args.threads)
    bs = args.block_size
    decode_blocks = max(args.batch_sizes) * -(-(max(args.context_lens) + 1) // bs)
    num_blocks = max(decode_blocks, -(-max(args.prefill_sizes) // bs))
    runner = ModelRunner(cfg.model, cfg.dtype, cfg.device, num_blocks, bs, seed=args.seed)
    longest = max(max(args.prefill_sizes), max(args.context_lens) + 1)
    if longest > runner.max_model_len:
        raise SystemExit(f"sizes exceed the model's context of {runner.max_model_len} tokens")
    recorder = _Recorder(runner, args.seed)
    meta = {
        "model": cfg.model,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "block_size": bs,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    model = profile(
        recorder,
        prefill_sizes=args.prefill_sizes,
        batch_sizes=args.batch_sizes,
        context_lens=args.context_lens,
        repeats=args.repeats,
        meta=meta,
    )
    runner.close()
    return model, recorder


def format_table(model: CostModel, points: list[tuple[list[int], list[int], float]]) -> str:
    """Measured medians next to the fitted model's estimates."""
    import statistics

    prefill: dict[int, list[float]] = {}
    decode: dict[tuple[int, int], list[float]] = {}
    for new, ctx, s in points:
        if len(new) == 1 and ctx[0] == 0 and new[0] > 1:
            prefill.setdefault(new[0], []).append(s)
        elif all(n == 1 for n in new):
            decode.setdefault((len(new), ctx[0]), []).append(s)
    lines = [f"{'prefill tokens':>14s} {'measured ms':>12s} {'model ms':>9s}"]
    for n in sorted(prefill):
        med = statistics.median(prefill[n]) * 1e3
        lines.append(f"{n:14d} {med:12.2f} {model.estimate_prefill(n) * 1e3:9.2f}")
    lines.append(f"\n{'decode batch':>12s} {'context':>8s} {'measured ms':>12s} {'model ms':>9s}")
    for (b, c), times in sorted(decode.items()):
        med = statistics.median(times) * 1e3
        est = model.estimate_decode(b, b * c) * 1e3
        lines.append(f"{b:12d} {c:8d} {med:12.2f} {est:9.2f}")
    lines.append(
        f"\ndecode(b, ctx) = {model.decode_base * 1e3:.2f} ms + {model.decode_per_job * 1e3:.3f}"
        f" ms/job + {model.decode_per_context_token * 1e6:.3f} us/context token"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    cfg = server_config(args.model, args.dtype, args.device)
    model, recorder = measure(args, cfg)
    # The first points are warm-up calls that profile() discards; leave them out.
    print(format_table(model, recorder.points[2:]))
    out = Path(args.out) if args.out else profile_path(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0
