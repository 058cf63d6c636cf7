"""Greedy generation over a tp x pp group of processes, the way the workers run it.

Every rank runs the same batch; only (last stage, tp rank 0) has the sampled tokens, and
it broadcasts them (with the top log-probabilities) so every rank can build the next step,
as the scheduler does in the server. `run_parallel` spawns the ranks with gloo on the CPU.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastserve.runtime.dist import RankLayout, parallel_groups
from fastserve.runtime.model.config import ModelConfig
from fastserve.runtime.model.runner import BatchEntry, ModelRunner
from tests.engine_driver import GREEDY, GenResult, _top, block_tables

# A tiny random Llama whose heads split over 3 ranks (and whose 265-token vocabulary does
# not: the vocab-parallel padding is exercised), with an odd number of layers for 2 stages.
TP3_OVERRIDES: dict[str, Any] = {
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "num_key_value_heads": 3,
    "head_dim": 16,
}


def distributed_greedy(
    runner: ModelRunner, layout: RankLayout, rank: int, prompts: list[list[int]], steps: int
) -> list[GenResult] | None:
    """Greedy-decode all prompts in one batch; results on the reporting rank, else None."""
    src = next(r for r in range(layout.world) if layout.reports_tokens(r))
    tables = block_tables(runner, [len(p) + steps for p in prompts])
    results = [GenResult() for _ in prompts]
    entries = [
        BatchEntry(f"job{i}", list(p), 0, t, True, GREEDY, 0)
        for i, (p, t) in enumerate(zip(prompts, tables, strict=True))
    ]
    for _ in range(steps):
        sampled, logprobs = runner.execute_with_logprobs(entries)
        box: list[Any] = [None]
        if rank == src:
            box[0] = [(s.token_id, _top(lp, 8)) for s, lp in zip(sampled, logprobs, strict=True)]
        dist.broadcast_object_list(box, src=src)
        for r, (token, top) in zip(results, box[0], strict=True):
            r.tokens.append(token)
            r.top.append(top)
        entries = [
            BatchEntry(
                e.request_id,
                [r.tokens[-1]],
                e.start_pos + len(e.token_ids),
                e.block_table,
                True,
                GREEDY,
                len(r.tokens),
            )
            for e, r in zip(entries, results, strict=True)
        ]
    return results if rank == src else None


def _rank_main(
    rank: int, layout: RankLayout, store: str, out: str, job: Callable[..., Any], args: tuple
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=layout.world
    )
    try:
        result = job(layout, rank, *args)
        if result is not None:
            Path(out).write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


def greedy_job(
    layout: RankLayout,
    rank: int,
    model_dir: Path,
    prompts: list[list[int]],
    steps: int,
    blocks: int,
    block_size: int,
) -> list[GenResult] | None:
    """Load this rank's shard and run distributed_greedy (a picklable spawn target)."""
    config = ModelConfig.from_model_dir(model_dir)
    tp, pp = parallel_groups(layout, rank, config.num_layers)
    runner = ModelRunner(model_dir, "float32", "cpu", blocks, block_size, tp=tp, pp=pp)
    try:
        return distributed_greedy(runner, layout, rank, prompts, steps)
    finally:
        runner.close()


def run_parallel(layout: RankLayout, tmp: Path, job: Callable[..., Any], *args: Any) -> Any:
    """Run `job(layout, rank, *args)` on every rank; return what the one rank that returned
    something returned."""
    tmp.mkdir(parents=True, exist_ok=True)
    tag = f"{layout.tp}x{layout.pp}-{os.getpid()}"
    store, out = tmp / f"store-{tag}", tmp / f"out-{tag}.pkl"
    mp.spawn(
        _rank_main, args=(layout, str(store), str(out), job, args), nprocs=layout.world, join=True
    )
    return pickle.loads(out.read_bytes())
