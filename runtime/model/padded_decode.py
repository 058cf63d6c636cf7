"""Decode attention in fixed shapes, for CUDA graphs: a batch of B single-query jobs, each
job's block table padded to MB blocks, keys past each job's length masked.

The split-K path (decode_attention.py) sizes its tensors by the blocks the jobs actually
hold, which a captured graph cannot: its shapes are fixed at capture. Here every shape
depends on (B, MB) only, the number of keys per job is data (`lens`), and the same graph
replays for any batch that fits the bucket. Padded table entries point at block 0 (a
valid block whose keys the mask hides); scores and softmax are float32 as on the other path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PaddedDecode:
    """Fixed-shape layout of B single-query jobs."""

    table: torch.Tensor  # [B, MB] int64: each job's blocks, padded with 0
    lens: torch.Tensor  # [B] int64: keys per job (its position + 1)


def padded_decode_attention(
    q: torch.Tensor,
    key_blocks: torch.Tensor,
    value_blocks: torch.Tensor,
    pd: PaddedDecode,
    scale: float,
) -> torch.Tensor:
    """q [B, H, D] over each job's keys -> [B, H, D]. key_blocks [N, KVH, D, bs] (keys
    stored transposed, see kv/pools.py), value_blocks [N, KVH, bs, D]."""
    batch, heads, dim = q.shape
    _, kvh, _, bs = key_blocks.shape
    blocks = pd.table.shape[1]
    flat = pd.table.reshape(-1)
    compute = torch.float32
    # [B * MB, KVH, D, bs] -> [B, KVH, D, MB * bs]; values -> [B, KVH, MB * bs, D]
    k = key_blocks.index_select(0, flat).view(batch, blocks, kvh, dim, bs)
    k = k.permute(0, 2, 3, 1, 4).reshape(batch, kvh, dim, blocks * bs).to(compute)
    v = value_blocks.index_select(0, flat).view(batch, blocks, kvh, bs, dim)
    v = v.permute(0, 2, 1, 3, 4).reshape(batch, kvh, blocks * bs, dim).to(compute)
    qg = (q.to(compute) * scale).view(batch, kvh, heads // kvh, dim)
    scores = torch.matmul(qg, k)  # [B, KVH, G, MB * bs]
    keys = torch.arange(blocks * bs, device=q.device)
    hidden = keys.view(1, 1, 1, -1) >= pd.lens.view(-1, 1, 1, 1)
    probs = scores.masked_fill_(hidden, float("-inf")).softmax(-1)
    return torch.matmul(probs, v).view(batch, heads, dim).to(q.dtype)
