"""Paged attention over a flattened batch of jobs of different lengths.

The batch is one [T, ...] tensor: first the single-query rows (decodes, in job order),
then each multi-token job's rows (prefill chunks). Every token's K/V is first written into
its cache slot; then
- prefill chunks run causal SDPA per job over the job's keys (fresh ones, or gathered from
  the cache when earlier tokens are cached), and
- all single-query rows run together as split-K paged attention (decode_attention.py).
Nothing is padded to the longest job of the batch, but in a CUDA graph's fixed-shape batch
(`padded`, see cuda_graphs.py and padded_decode.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fastserve.runtime.model.decode_attention import (
    DecodeMeta,
    build_decode_meta,
    decode_attention,
)
from fastserve.runtime.model.padded_decode import PaddedDecode, padded_decode_attention


@dataclass
class PrefillSeq:
    """One multi-token job in the flattened batch."""

    row_start: int
    row_end: int
    start_pos: int  # tokens of this job already cached before this chunk
    block_ids: torch.Tensor | None  # blocks to gather when start_pos > 0
    # [rows, keys] additive bias (0 or -inf), when start_pos > 0 (bottom-right causal);
    # torch's CPU SDPA runs a float bias ~1.5x faster than the same bool mask.
    mask: torch.Tensor | None


@dataclass
class AttentionMetadata:
    """Everything attention needs for one forward, shared by all layers."""

    num_tokens: int
    positions: torch.Tensor  # [T] position of each token in its job
    write_blocks: torch.Tensor  # [T] cache block of each token's slot
    write_offsets: torch.Tensor  # [T] offset of the slot inside its block
    slots: torch.Tensor  # [T] block * block_size + offset (the C kernels' one index)
    decode: DecodeMeta | None
    prefills: list[PrefillSeq]
    padded: PaddedDecode | None = None  # a CUDA graph's batch: single queries, fixed shapes


@dataclass
class SeqInput:
    """One job's slice of the batch, as the metadata builder sees it."""

    num_tokens: int
    start_pos: int
    block_table: list[int]


def build_metadata(
    seqs: list[SeqInput],
    block_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> AttentionMetadata:
    """Metadata for `seqs`, which must list single-token jobs before multi-token ones."""
    positions: list[int] = []
    wblocks: list[int] = []
    woffsets: list[int] = []
    decode_seqs: list[SeqInput] = []
    prefills: list[PrefillSeq] = []
    row = 0
    for seq in seqs:
        end_pos = seq.start_pos + seq.num_tokens
        if len(seq.block_table) * block_size < end_pos:
            raise ValueError(
                f"block table of {len(seq.block_table)} blocks cannot hold {end_pos} tokens"
            )
        span = range(seq.start_pos, end_pos)
        positions.extend(span)
        wblocks.extend(seq.block_table[p // block_size] for p in span)
        woffsets.extend(p % block_size for p in span)
        if seq.num_tokens == 1:
            if prefills:
                raise ValueError("single-token jobs must come before multi-token jobs")
            decode_seqs.append(seq)
        else:
            prefills.append(_prefill_seq(seq, row, block_size, device, dtype))
        row += seq.num_tokens

    def t(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(device, non_blocking=True)

    return AttentionMetadata(
        num_tokens=row,
        positions=t(positions),
        write_blocks=t(wblocks),
        write_offsets=t(woffsets),
        slots=t([b * block_size + o for b, o in zip(wblocks, woffsets, strict=True)]),
        decode=build_decode_meta(decode_seqs, block_size, device) if decode_seqs else None,
        prefills=prefills,
    )


def _prefill_seq(
    seq: SeqInput, row: int, block_size: int, device: torch.device, dtype: torch.dtype
) -> PrefillSeq:
    if seq.start_pos == 0:
        return PrefillSeq(row, row + seq.num_tokens, 0, None, None)
    total = seq.start_pos + seq.num_tokens
    nblocks = -(-total // block_size)
    key_pos = torch.arange(total)
    query_pos = torch.arange(seq.start_pos, total)
    hidden = key_pos.unsqueeze(0) > query_pos.unsqueeze(1)
    mask = torch.zeros(hidden.shape, dtype=dtype).masked_fill_(hidden, float("-inf"))
    return PrefillSeq(
        row,
        row + seq.num_tokens,
        seq.start_pos,
        torch.tensor(seq.block_table[:nblocks], dtype=torch.long).to(device),
        mask.to(device),
    )


def write_kv(
    key_blocks: torch.Tensor, value_blocks: torch.Tensor, meta: AttentionMetadata, kv: torch.Tensor
) -> None:
    """Store every token's K and V (kv: [T, 2, kv_heads, D]) into its cache slot.

    key_blocks: [num_blocks, kv_heads, D, block_size]; value_blocks: [num_blocks, kv_heads,
    block_size, D] (one layer of the pool).
    """
    key_blocks[meta.write_blocks, :, :, meta.write_offsets] = kv[:, 0]
    value_blocks[meta.write_blocks, :, meta.write_offsets] = kv[:, 1]


def paged_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    key_blocks: torch.Tensor,
    value_blocks: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Attention for the whole batch.

    q: [T, heads, D]; kv: [T, 2, kv_heads, D] (this step's K/V, already written to the
    cache). Returns [T, heads * D].
    """
    if meta.padded is not None:
        out = padded_decode_attention(q, key_blocks, value_blocks, meta.padded, scale)
        return out.reshape(meta.num_tokens, -1)
    outs: list[torch.Tensor] = []
    if meta.decode is not None:
        n = meta.decode.num_seqs
        outs.append(decode_attention(q[:n], key_blocks, value_blocks, meta.decode, scale))
    for seq in meta.prefills:
        outs.append(prefill_attention(q, kv, key_blocks, value_blocks, seq, scale))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return out.reshape(meta.num_tokens, -1)


def prefill_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    key_blocks: torch.Tensor,
    value_blocks: torch.Tensor,
    seq: PrefillSeq,
    scale: float,
) -> torch.Tensor:
    qs = q[seq.row_start : seq.row_end].transpose(0, 1).unsqueeze(0)  # [1, H, Lq, D]
    if seq.block_ids is None:
        fresh = kv[seq.row_start : seq.row_end]  # [Lq, 2, KVH, D]
        k = fresh[:, 0].transpose(0, 1).unsqueeze(0)  # [1, KVH, Lq, D]
        v = fresh[:, 1].transpose(0, 1).unsqueeze(0)
        causal, mask = True, None
    else:
        total = seq.start_pos + seq.row_end - seq.row_start
        kvh, dim = key_blocks.shape[1], key_blocks.shape[2]
        # [nb, KVH, D, bs] -> [KVH, nb * bs, D]; [nb, KVH, bs, D] -> [KVH, nb * bs, D]
        k = key_blocks.index_select(0, seq.block_ids).permute(1, 0, 3, 2).reshape(kvh, -1, dim)
        v = value_blocks.index_select(0, seq.block_ids).transpose(0, 1).reshape(kvh, -1, dim)
        k, v = k[:, :total].unsqueeze(0), v[:, :total].unsqueeze(0)
        causal, mask = False, seq.mask
    out = F.scaled_dot_product_attention(
        qs, k, v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=True
    )
    return out[0].transpose(0, 1)  # [Lq, H, D]
