"""Paged decode attention vs a naive per-job softmax over the same cached keys."""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime.kv.pools import DeviceKVPool
from fastserve.runtime.kv.spec import KVCacheSpec
from fastserve.runtime.model.attention import SeqInput, build_metadata
from fastserve.runtime.model.decode_attention import decode_attention


def _naive(q: torch.Tensor, pool: DeviceKVPool, seq: SeqInput) -> torch.Tensor:
    """q [H, D] of one job attending to its start_pos + 1 cached keys (float64)."""
    bs = pool.spec.block_size
    total = seq.start_pos + 1
    blocks = torch.tensor(seq.block_table[: -(-total // bs)])
    k = pool.key(0)[blocks].reshape(-1, *pool.key(0).shape[2:])[:total].double()
    v = pool.value(0)[blocks].reshape(-1, *pool.value(0).shape[2:])[:total].double()
    group = q.shape[0] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [L, H, D]
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("hd,lhd->hl", q.double(), k) * q.shape[1] ** -0.5
    return torch.einsum("hl,lhd->hd", scores.softmax(-1), v)


@pytest.mark.parametrize("lengths", [[1], [70], [1, 5, 4, 9, 70, 33, 12], [4, 4, 4]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_matches_naive(lengths, dtype):
    gen = torch.Generator().manual_seed(len(lengths))
    spec = KVCacheSpec(num_layers=1, num_kv_heads=2, head_dim=8, block_size=4, dtype=dtype)
    pool = DeviceKVPool(spec, 64, "cpu")
    pool.storage.copy_(torch.randn(pool.storage.shape, generator=gen).to(dtype))
    ids = torch.randperm(64, generator=gen).tolist()
    seqs = []
    for n in lengths:  # n keys: the query sits at position n - 1
        need = -(-n // 4)
        seqs.append(SeqInput(1, n - 1, ids[:need]))
        ids = ids[need:]
    meta = build_metadata(seqs, 4, torch.device("cpu"))
    q = torch.randn(len(seqs), 6, 8, generator=gen).to(dtype)  # 6 query heads over 2 kv heads
    got = decode_attention(q, pool.key_blocks(0), pool.value_blocks(0), meta.decode, 8**-0.5)
    want = torch.stack([_naive(q[i], pool, s) for i, s in enumerate(seqs)])
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol)
