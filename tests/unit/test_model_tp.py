"""Tensor parallelism over gloo on CPU: 2 ranks compute what 1 rank computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.parallel import TPGroup
from fastserve.runtime.model.runner import BatchEntry, ModelRunner
from tests.model_fixtures import make_tiny_llama_dir

pytestmark = pytest.mark.slow
GREEDY = SamplingParams(temperature=0.0)


def _run(path: Path, tp: TPGroup) -> torch.Tensor:
    runner = ModelRunner(path, "float32", "cpu", num_device_blocks=16, block_size=4, tp=tp)
    prompt_a, prompt_b = list(range(10, 31)), list(range(40, 47))
    first = runner.execute_with_logprobs(
        [BatchEntry("a", prompt_a, 0, [0, 1, 2, 3, 4, 5]), BatchEntry("b", prompt_b, 0, [6, 7])]
    )
    second = runner.execute_with_logprobs(
        [BatchEntry("a", [5], 21, [0, 1, 2, 3, 4, 5]), BatchEntry("b", [9, 9], 7, [6, 7, 8])]
    )
    return torch.cat([first[1], second[1]])


def _rank_main(rank: int, paths: list[Path], store: Path, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = [_run(path, TPGroup(rank, 2)) for path in paths]
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one(tmp_path):
    # 265 tokens: the vocab-parallel shards need padding, which is part of the test.
    paths = [
        make_tiny_llama_dir(tmp_path / "untied", seed=2),
        make_tiny_llama_dir(tmp_path / "tied", seed=3, tie_word_embeddings=True),
    ]
    out = tmp_path / "tp.pt"
    mp.spawn(_rank_main, args=(paths, tmp_path / "store", out), nprocs=2, join=True)
    for path, got in zip(paths, torch.load(out), strict=True):
        torch.testing.assert_close(got, _run(path, TPGroup()), atol=1e-4, rtol=0)
