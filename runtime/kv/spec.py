"""KV cache geometry: how big a block is and how many fit a memory budget."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastserve.runtime.model.config import ModelConfig
from fastserve.runtime.model.parallel import split_layers


@dataclass(frozen=True)
class KVCacheSpec:
    """Shape of one rank's KV cache block: `block_size` tokens of K and V for every layer."""

    num_layers: int  # layers held by this rank (its pipeline stage's)
    num_kv_heads: int  # heads held by this rank (kv heads / tp size)
    head_dim: int
    block_size: int
    dtype: torch.dtype

    @classmethod
    def for_model(
        cls,
        config: ModelConfig,
        block_size: int,
        dtype: torch.dtype,
        tp_size: int = 1,
        num_layers: int | None = None,
    ) -> KVCacheSpec:
        """One rank's block: its kv heads (of tp_size) and `num_layers` layers (its pipeline
        stage's; default all)."""
        if config.num_kv_heads % tp_size:
            raise ValueError(f"{config.num_kv_heads} kv heads do not split over tp={tp_size}")
        return cls(
            num_layers=config.num_layers if num_layers is None else num_layers,
            num_kv_heads=config.num_kv_heads // tp_size,
            head_dim=config.head_dim,
            block_size=block_size,
            dtype=dtype,
        )

    @classmethod
    def for_layout(
        cls, config: ModelConfig, block_size: int, dtype: torch.dtype, tp: int = 1, pp: int = 1
    ) -> KVCacheSpec:
        """The block of the largest rank of a tp x pp layout: the stage with the most layers
        (the first: earlier stages take the remainder). Block ids are the same on every
        rank, so this rank's block is what a memory budget per worker must fit."""
        most = max(end - start for start, end in split_layers(config.num_layers, pp))
        return cls.for_model(config, block_size, dtype, tp, most)

    @property
    def dtype_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_size

    @property
    def bytes_per_block(self) -> int:
        return self.bytes_per_token * self.block_size

    def block_shape(self) -> tuple[int, ...]:
        """Shape of one block in a pool: (layers, K|V, kv_heads, block_size * head_dim).

        Per block and head, keys are stored transposed ([head_dim, block_size]) and values
        as they are ([block_size, head_dim]): exactly the operands of the two attention
        matmuls, so decode reads blocks without re-laying them out (see pools.py).
        """
        return (self.num_layers, 2, self.num_kv_heads, self.block_size * self.head_dim)

    def blocks_for_bytes(self, budget_bytes: int | float) -> int:
        """How many whole blocks fit in `budget_bytes`."""
        return max(0, int(budget_bytes) // self.bytes_per_block)

    def blocks_for_gib(self, gib: float) -> int:
        return self.blocks_for_bytes(gib * (1 << 30))
