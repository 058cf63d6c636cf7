"""The CUDA-graph decode path's fixed-shape batch, run eagerly on the CPU (`capture=False`):
the same logits, tokens and KV as the plain forward, for batches padded to their bucket.
The capture itself runs in tests/gpu/test_cuda_paths.py where a GPU is present."""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime.model.cpu_kernels import CpuKernels
from fastserve.runtime.model.cuda_graphs import DecodeGraphs, bucket
from fastserve.runtime.model.decode_attention import build_decode_meta, decode_attention
from fastserve.runtime.model.padded_decode import PaddedDecode, padded_decode_attention
from fastserve.runtime.model.runner import ModelRunner
from fastserve.runtime.worker_state import BatchEntry
from tests.engine_driver import divergence_report, greedy_generate
from tests.model_fixtures import make_tiny_llama_dir

BS = 4


def test_buckets_are_powers_of_two_up_to_the_cap():
    assert [bucket(n, 256) for n in (1, 2, 3, 5, 16, 17, 200)] == [1, 2, 4, 8, 16, 32, 256]
    assert bucket(300, 300) == 300 and bucket(5, 6) == 6


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 1), (3, 3)])
def test_padded_decode_attention_matches_split_k(heads, kv_heads):
    torch.manual_seed(heads)
    n, dim = 40, 16
    keys, values = torch.randn(n, kv_heads, dim, BS), torch.randn(n, kv_heads, BS, dim)
    ids = torch.randperm(n).tolist()

    class Seq:
        def __init__(self, pos, table):
            self.start_pos, self.block_table = pos, table

    seqs = [Seq(5, ids[0:2]), Seq(0, ids[2:3]), Seq(14, ids[3:7]), Seq(7, ids[7:9])]
    q = torch.randn(len(seqs), heads, dim)
    ref = decode_attention(q, keys, values, build_decode_meta(seqs, BS, q.device), 0.3)
    table = torch.zeros(len(seqs), 8, dtype=torch.long)  # padded past every job's blocks
    for i, s in enumerate(seqs):
        table[i, : len(s.block_table)] = torch.tensor(s.block_table)
    lens = torch.tensor([s.start_pos + 1 for s in seqs])
    got = padded_decode_attention(q, keys, values, PaddedDecode(table, lens), 0.3)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.fixture
def torch_layers(monkeypatch):
    """Runners built in this test use torch layers (the path graphs capture), not the C
    kernels."""
    monkeypatch.setattr(CpuKernels, "load", classmethod(lambda cls: None))


def test_graph_batches_give_the_plain_forwards_tokens_and_kv(tmp_path, torch_layers):
    model = make_tiny_llama_dir(tmp_path / "tiny")
    # 3 and 5 jobs pad to buckets of 4 and 8; 40 steps move the longest job across block
    # buckets (contexts of ~30 to ~90 tokens in 4-token blocks).
    prompts = [[1] + list(range(3 + i, 30 + 9 * i)) for i in range(5)]
    plain = ModelRunner(model, "float32", "cpu", num_device_blocks=256, block_size=BS)
    graphed = ModelRunner(model, "float32", "cpu", num_device_blocks=256, block_size=BS)
    assert plain.graphs is None and graphed.graphs is None  # not on a CPU
    graphed.graphs = DecodeGraphs(
        graphed.model, graphed._kv_layers, BS, graphed.max_model_len, capture=False
    )
    for batch in (prompts[:3], prompts):
        ref = greedy_generate(plain, batch, 40, shuffle_seed=1)
        got = greedy_generate(graphed, batch, 40, shuffle_seed=1)
        for r, g in zip(ref, got, strict=True):
            assert divergence_report(r, g, tol=1e-4) is None, divergence_report(r, g, tol=1e-4)
        torch.testing.assert_close(graphed.device_pool.storage, plain.device_pool.storage)
    assert {b for b, _ in graphed.graphs._buckets} == {4, 8}
    assert len({m for _, m in graphed.graphs._buckets}) >= 2


def test_only_batches_of_sampled_single_tokens_fit(tmp_path, torch_layers):
    runner = ModelRunner(make_tiny_llama_dir(tmp_path / "tiny"), "float32", "cpu",
                         num_device_blocks=32, block_size=BS)  # fmt: skip
    graphs = DecodeGraphs(runner.model, runner._kv_layers, BS, 256, capture=False)
    decode = BatchEntry("a", [5], 9, [0, 1, 2])
    assert graphs.fits([decode, BatchEntry("b", [6], 3, [3])])
    assert not graphs.fits([decode, BatchEntry("b", [6, 7], 0, [3])])  # a prefill chunk
    assert not graphs.fits([BatchEntry("a", [5], 9, [0, 1, 2], sample=False)])
    assert not graphs.fits([])
    assert not DecodeGraphs.usable(runner.model)  # CPU: graphs are a CUDA path
