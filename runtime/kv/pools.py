"""Device and host KV pools: one tensor per pool, block-major.

Layout: storage[num_blocks, layers, 2 (K|V), kv_heads, block_size * head_dim].
- Block-major: one block of every layer is one contiguous slab, so a swap moves each run
  of consecutive block ids with a single copy.
- Inside a block, per layer and head, keys are stored transposed ([head_dim, block_size])
  and values plainly ([block_size, head_dim]). Gathering a list of blocks then yields the
  operands of q @ K^T and P @ V directly, with no re-layout copy per decode step.
Token-major per-layer views ([num_blocks, block_size, kv_heads, head_dim]) are available
through `key()` / `value()` for inspection and tests.
"""

from __future__ import annotations

import torch

from fastserve.runtime.kv.spec import KVCacheSpec


class KVPool:
    """A fixed number of KV blocks in one tensor on one device."""

    def __init__(
        self,
        spec: KVCacheSpec,
        num_blocks: int,
        device: torch.device,
        pin: bool = False,
        zeroed: bool = True,
    ):
        self.spec = spec
        self.num_blocks = num_blocks
        self.device = torch.device(device)
        shape = (num_blocks, *spec.block_shape())
        # The device pool is zeroed: padded attention lanes multiply stale values by 0, and
        # 0 * NaN from uninitialised memory would poison the result. The host pool only ever
        # holds whole blocks copied from the device before they are copied back, so it is
        # left unwritten: on a CPU host its pages then cost no memory until used.
        make = torch.zeros if zeroed else torch.empty
        self.storage = make(shape, dtype=spec.dtype, device=self.device, pin_memory=pin)

    def key_blocks(self, layer: int) -> torch.Tensor:
        """[num_blocks, kv_heads, head_dim, block_size] view of one layer's keys (transposed)."""
        s = self.spec
        return self.storage[:, layer, 0].view(
            self.num_blocks, s.num_kv_heads, s.head_dim, s.block_size
        )

    def value_blocks(self, layer: int) -> torch.Tensor:
        """[num_blocks, kv_heads, block_size, head_dim] view of one layer's values."""
        s = self.spec
        return self.storage[:, layer, 1].view(
            self.num_blocks, s.num_kv_heads, s.block_size, s.head_dim
        )

    def key(self, layer: int) -> torch.Tensor:
        """[num_blocks, block_size, kv_heads, head_dim] (strided) view of one layer's keys."""
        return self.key_blocks(layer).permute(0, 3, 1, 2)

    def value(self, layer: int) -> torch.Tensor:
        """[num_blocks, block_size, kv_heads, head_dim] (strided) view of one layer's values."""
        return self.value_blocks(layer).permute(0, 2, 1, 3)

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()


class DeviceKVPool(KVPool):
    """The blocks attention reads and writes, on the model's device."""

    def __init__(self, spec: KVCacheSpec, num_blocks: int, device: torch.device | str):
        super().__init__(spec, num_blocks, torch.device(device))


class HostKVPool(KVPool):
    """Offloaded blocks in CPU memory; pinned when CUDA is present so copies are async DMA."""

    def __init__(self, spec: KVCacheSpec, num_blocks: int, pin: bool | None = None):
        if pin is None:
            pin = torch.cuda.is_available()
        pin = pin and num_blocks > 0
        super().__init__(spec, num_blocks, torch.device("cpu"), pin=pin, zeroed=False)
