"""Tensor-parallel seam: how weights split over ranks and where ranks meet.

Megatron-style split: q/k/v and gate/up are column-parallel (each rank owns whole heads and
a slice of the FFN), o_proj and down_proj are row-parallel (partial sums, then all-reduce),
the embedding and lm_head are vocab-parallel. With size 1 every collective is the identity;
with size > 1 they go through torch.distributed on `group` (NCCL on GPUs, gloo on CPUs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


def split_layers(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """[start, end) layer range of each pipeline stage; earlier stages take the remainder
    (the last stage also runs the norm, lm_head and sampling, so it gets no extra layer)."""
    if not 1 <= stages <= num_layers:
        raise ValueError(f"cannot split {num_layers} layers into {stages} pipeline stages")
    base, extra = divmod(num_layers, stages)
    bounds, start = [], 0
    for s in range(stages):
        end = start + base + (1 if s < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


@dataclass
class PPStage:
    """This rank's pipeline stage and its point-to-point peers.

    TP rank i of stage s exchanges activations with TP rank i of stages s-1 and s+1: after
    the all-reduce every TP rank holds the same hidden states, so each sends its own copy
    and no scatter/gather is needed across stages.
    """

    stage: int = 0
    size: int = 1
    layer_start: int = 0
    layer_end: int = -1  # -1: every layer (single stage)
    prev_rank: int = -1  # global rank receiving from; -1 on the first stage
    next_rank: int = -1  # global rank sending to; -1 on the last stage
    _pending: list[Any] = field(default_factory=list, repr=False)

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.size - 1

    def layers(self, num_layers: int) -> range:
        return range(self.layer_start, num_layers if self.layer_end < 0 else self.layer_end)

    def send(self, x: torch.Tensor) -> None:
        """Hand activations to the next stage without waiting for it to take them, so this
        stage can start the next tick at once (that is what keeps the pipeline full)."""
        self.wait_sends(keep=1)  # bound the buffers in flight; the oldest is long done
        x = x.contiguous()
        self._pending.append((dist.isend(x, self.next_rank), x))

    def wait_sends(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            work, _ = self._pending.pop(0)
            work.wait()

    def recv(
        self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Activations of the previous stage; the shape is known from the tick's own plan."""
        x = torch.empty(shape, dtype=dtype, device=device)
        dist.recv(x, self.prev_rank)
        return x

    @classmethod
    def for_rank(cls, stage: int, size: int, num_layers: int, tp_rank: int, tp: int) -> PPStage:
        start, end = split_layers(num_layers, size)[stage]
        prev_rank = (stage - 1) * tp + tp_rank if stage > 0 else -1
        next_rank = (stage + 1) * tp + tp_rank if stage < size - 1 else -1
        return cls(stage, size, start, end, prev_rank, next_rank)
