"""Tensor-parallel seam: how weights split over ranks and where ranks meet.

Megatron-style split: q/k/v and gate/up are column-parallel (each rank owns whole heads and
a slice of the FFN), o_proj and down_proj are row-parallel (partial sums, then all-reduce),
the embedding and lm_head are vocab-parallel. With size 1 every collective is the identity;
with size > 1 they go through torch.distributed on `group` (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass
class TPGroup:
    """This rank's place in its tensor-parallel group."""

    rank: int = 0
    size: int = 1
    group: Any = None  # torch.distributed process group; None is the default group

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.size:
            raise ValueError(f"tp rank {self.rank} outside group of size {self.size}")

    def shard(self, total: int, what: str) -> tuple[int, int]:
        """[start, end) of this rank's equal share of `total` rows/heads."""
        if total % self.size:
            raise ValueError(f"{what}={total} does not split evenly over tp={self.size}")
        per = total // self.size
        return self.rank * per, (self.rank + 1) * per

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum partial outputs of row-parallel layers (after o_proj and down_proj)."""
        if self.size > 1:
            dist.all_reduce(x, group=self.group)
        return x

    def gather_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """Concatenate vocab-parallel logits [R, V/tp] of all ranks into [R, V]."""
        if self.size == 1:
            return logits
        parts = [torch.empty_like(logits) for _ in range(self.size)]
        dist.all_gather(parts, logits.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)

    def embed(self, ids: torch.Tensor, table: torch.Tensor, vocab_start: int) -> torch.Tensor:
        """Vocab-parallel embedding: each rank looks up the ids it owns, then all-reduce."""
        if self.size == 1:
            return F.embedding(ids, table)
        local = ids - vocab_start
        outside = (local < 0) | (local >= table.shape[0])
        out = F.embedding(local.masked_fill(outside, 0), table)
        out.masked_fill_(outside.unsqueeze(-1), 0)
        return self.all_reduce(out)
