"""Decode attention: one query per job, many jobs, keys in paged blocks.

Split-K over blocks: every cached block of every job is scored in one batched matmul
straight from the gathered blocks (the pool stores keys transposed, see kv/pools.py), and
the per-block softmax partials are merged per job with a log-sum-exp reduction. No Python
loop over jobs; padding is at most the unfilled tail of each job's last block. A batch of
a single job takes one SDPA call instead (batch-1 decoding, where op count matters most).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass
class DecodeMeta:
    """Split-K layout of the single-query rows."""

    num_seqs: int
    blocks: torch.Tensor  # [n] every cached block of every single-query job, job by job
    owner: torch.Tensor  # [n] which single-query row each of those blocks belongs to
    bias: torch.Tensor  # [n, 1, 1, block_size] float32: 0 for filled slots, -inf beyond
    one_block_each: bool  # every job fits in one block: no merge needed
    single_len: int  # with exactly one job: its number of keys (else 0)
    starts: torch.Tensor  # [B + 1] where each job's blocks begin in `blocks` (CSR)
    lens: torch.Tensor  # [B] keys per job (its position + 1)


class DecodeSeq(Protocol):
    """A single-query job: its query is at position start_pos, its blocks in block_table."""

    start_pos: int
    block_table: list[int]


def build_decode_meta(
    seqs: Sequence[DecodeSeq], block_size: int, device: torch.device
) -> DecodeMeta:
    """Layout of the single-query jobs `seqs` (each computing the token at start_pos)."""
    blocks: list[int] = []
    owner: list[int] = []
    filled: list[int] = []
    starts = [0]
    for i, seq in enumerate(seqs):
        total = seq.start_pos + 1
        nblocks = -(-total // block_size)
        starts.append(starts[-1] + nblocks)
        blocks.extend(seq.block_table[:nblocks])
        owner.extend([i] * nblocks)
        filled.extend([block_size] * (nblocks - 1) + [total - (nblocks - 1) * block_size])
    lane = torch.arange(block_size)
    empty = lane.unsqueeze(0) >= torch.tensor(filled).unsqueeze(1)
    # float32: decode scores are computed in float32 whatever the model dtype.
    bias = torch.zeros(empty.shape, dtype=torch.float32).masked_fill_(empty, float("-inf"))
    return DecodeMeta(
        num_seqs=len(seqs),
        blocks=torch.tensor(blocks, dtype=torch.long).to(device),
        owner=torch.tensor(owner, dtype=torch.long).to(device),
        bias=bias.view(len(filled), 1, 1, block_size).to(device),
        one_block_each=len(owner) == len(seqs),
        single_len=seqs[0].start_pos + 1 if len(seqs) == 1 else 0,
        starts=torch.tensor(starts, dtype=torch.long).to(device),
        lens=torch.tensor([s.start_pos + 1 for s in seqs], dtype=torch.long).to(device),
    )


def _decode_one(
    q: torch.Tensor,
    key_blocks: torch.Tensor,
    value_blocks: torch.Tensor,
    dm: DecodeMeta,
    scale: float,
) -> torch.Tensor:
    """One single-query job (batch-1 decoding): one SDPA call, far fewer ops than split-K."""
    _, heads, dim = q.shape
    kv_heads = key_blocks.shape[1]
    # [nb, KVH, D, bs] -> [KVH, nb * bs, D]; [nb, KVH, bs, D] -> [KVH, nb * bs, D]
    k = key_blocks.index_select(0, dm.blocks).permute(1, 0, 3, 2).reshape(kv_heads, -1, dim)
    v = value_blocks.index_select(0, dm.blocks).transpose(0, 1).reshape(kv_heads, -1, dim)
    # The query heads sharing a kv head act as that head's queries; all keys are visible.
    qg = q.view(1, kv_heads, heads // kv_heads, dim)
    k, v = k[:, : dm.single_len].unsqueeze(0), v[:, : dm.single_len].unsqueeze(0)
    return F.scaled_dot_product_attention(qg, k, v, scale=scale).reshape(1, heads, dim)


def decode_attention(
    q: torch.Tensor,
    key_blocks: torch.Tensor,
    value_blocks: torch.Tensor,
    dm: DecodeMeta,
    scale: float,
) -> torch.Tensor:
    """Split-K paged attention for single-query rows: q [B, H, D] -> [B, H, D]."""
    batch, heads, dim = q.shape
    kv_heads = key_blocks.shape[1]
    group = heads // kv_heads
    if dm.single_len:
        return _decode_one(q, key_blocks, value_blocks, dm, scale)
    compute = torch.float32  # scores and softmax in float32 even for bf16 caches
    k = key_blocks.index_select(0, dm.blocks).to(compute)  # [n, KVH, D, bs]
    v = value_blocks.index_select(0, dm.blocks).to(compute)  # [n, KVH, bs, D]
    qg = (q.to(compute) * scale).view(batch, kv_heads, group, dim)
    if not dm.one_block_each:
        qg = qg.index_select(0, dm.owner)
    scores = torch.matmul(qg, k).add_(dm.bias)  # [n, KVH, G, bs]
    peak = scores.amax(-1, keepdim=True)
    probs = scores.sub_(peak).exp_()
    denom = probs.sum(-1, keepdim=True)
    partial = torch.matmul(probs, v)  # [n, KVH, G, D], unnormalised
    if dm.one_block_each:
        return (partial / denom).view(batch, heads, dim).to(q.dtype)
    # Merge block partials per job: rescale each by exp(its max - the job's max).
    owner = dm.owner
    job_peak = torch.full(
        (batch, kv_heads, group, 1), float("-inf"), dtype=compute, device=q.device
    )
    job_peak.scatter_reduce_(0, owner.view(-1, 1, 1, 1).expand_as(peak), peak, "amax")
    weight = (peak - job_peak.index_select(0, owner)).exp_()
    num = torch.zeros((batch, kv_heads, group, dim), dtype=compute, device=q.device)
    num.index_add_(0, owner, partial.mul_(weight))
    den = torch.zeros((batch, kv_heads, group, 1), dtype=compute, device=q.device)
    den.index_add_(0, owner, denom.mul_(weight))
    return (num / den).view(batch, heads, dim).to(q.dtype)
