"""Pure block allocator: which block ids of a fixed pool are free. No tensors, no I/O."""

from __future__ import annotations


class BlockPoolExhausted(RuntimeError):
    """More blocks were asked for than are free."""


class KVBlockPool:
    """A fixed pool of `num_blocks` block ids; allocation order is last-freed-first."""

    def __init__(self, num_blocks: int, name: str = "device") -> None:
        if num_blocks < 0:
            raise ValueError(f"{name} pool size must be >= 0, got {num_blocks}")
        self.name = name
        self.num_blocks = num_blocks
        # A stack: recently freed blocks are reused first (warm in caches).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._used: set[int] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return len(self._used)

    def can_allocate(self, n: int) -> bool:
        return 0 <= n <= len(self._free)

    def allocate(self, n: int) -> list[int]:
        if not self.can_allocate(n):
            raise BlockPoolExhausted(f"{self.name} pool: asked for {n} blocks, {self.num_free} free")
        ids = [self._free.pop() for _ in range(n)]
        self._used.update(ids)
        return ids

    def free(self, ids: list[int]) -> None:
        for block_id in ids:
            if block_id not in self._used:
                raise ValueError(f"{self.name} pool: block {block_id} freed but not allocated")
            self._used.remove(block_id)
            self._free.append(block_id)


def blocks_for_tokens(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold `num_tokens` tokens of KV."""
    return -(-num_tokens // block_size)
