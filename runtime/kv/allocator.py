"""Pure block allocator: which block ids of a fixed pool are free, shared or cached.

No tensors, no I/O. Blocks are reference counted: a job holds one reference to each block
of its table, and jobs whose token sequences share a prefix hold the same full blocks
(prefix caching). A full block whose KV is computed can be registered under its content
hash (runtime/kv/prefix_hash.py). When the last holder frees a registered block it stays
in the pool as a *cached free* block: `cached_prefix` finds it by hash and `share` takes it
back, until an allocation needs the room. Allocation takes never-used (or unregistered)
blocks first and only then evicts cached free blocks, least recently freed first; a block
someone holds is never evicted. `num_free` counts both kinds: what an allocation can get.
A pool nobody registers blocks in (the host pool, or prefix caching off) behaves as a
plain free list.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence


class BlockPoolExhausted(RuntimeError):
    """More blocks were asked for than are free."""


class KVBlockPool:
    """A fixed pool of `num_blocks` block ids with reference counts and a content index."""

    def __init__(self, num_blocks: int, name: str = "device") -> None:
        if num_blocks < 0:
            raise ValueError(f"{name} pool size must be >= 0, got {num_blocks}")
        self.name = name
        self.num_blocks = num_blocks
        # A stack of blocks holding nothing of value: recently freed ones are reused first
        # (warm in caches).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))
        self._refs: dict[int, int] = {}  # block -> holders (>= 1 while in use)
        # Cached free blocks, least recently freed first: the eviction order.
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._hash_of: dict[int, bytes] = {}  # registered block -> content hash
        self._block_of: dict[bytes, int] = {}  # content hash -> the one block holding it
        self.num_evictions = 0  # cached free blocks reclaimed by allocations, total
        # Times a block gained its second holder or lost it: whoever remembers which of a
        # table's blocks are shared (the scheduler's cache feed) looks again only then.
        self.sharing_changes = 0

    @property
    def num_free(self) -> int:
        """Blocks an allocation can get: never used plus cached free (evictable)."""
        return len(self._free) + len(self._lru)

    @property
    def num_used(self) -> int:
        """Blocks some job holds."""
        return len(self._refs)

    @property
    def num_cached(self) -> int:
        """Registered blocks, held or cached free: the KV a prefix look-up can find."""
        return len(self._hash_of)

    @property
    def num_cached_free(self) -> int:
        """Registered blocks nobody holds (kept until an allocation evicts them)."""
        return len(self._lru)

    def refcount(self, block_id: int) -> int:
        """Holders of the block (0: free or cached free)."""
        return self._refs.get(block_id, 0)

    def can_allocate(self, n: int) -> bool:
        return 0 <= n <= self.num_free

    def allocate(self, n: int) -> list[int]:
        """`n` blocks holding nothing, each with one reference; evicts cached ones if needed."""
        if not self.can_allocate(n):
            raise BlockPoolExhausted(f"{self.name} pool: asked for {n} blocks, {self.num_free} free")
        ids = []
        for _ in range(n):
            if self._free:
                block_id = self._free.pop()
            else:
                block_id, _ = self._lru.popitem(last=False)
                del self._block_of[self._hash_of.pop(block_id)]
                self.num_evictions += 1
            self._refs[block_id] = 1
            ids.append(block_id)
        return ids

    def free(self, ids: Sequence[int]) -> None:
        """Drop one reference to each block (a job's table, in table order). Unregistered
        blocks go back to the free stack; registered ones become cached free, a table's
        later entries ahead of its first ones in the eviction order: a chain's head, shared
        by the most prompts, goes last."""
        released = []
        for block_id in ids:
            refs = self._refs.get(block_id)
            if refs is None:
                raise ValueError(f"{self.name} pool: block {block_id} freed but not allocated")
            if refs > 1:
                self._refs[block_id] = refs - 1
                self.sharing_changes += refs == 2
                continue
            del self._refs[block_id]
            released.append(block_id)
        for block_id in released:
            if block_id not in self._hash_of:
                self._free.append(block_id)
        for block_id in reversed(released):
            if block_id in self._hash_of:
                self._lru[block_id] = None

    def cached_prefix(self, hashes: Iterable[bytes]) -> list[int]:
        """The blocks holding the leading `hashes`, up to the first one not cached. Takes
        nothing: `share` them to hold them."""
        blocks = []
        for h in hashes:
            block_id = self._block_of.get(h)
            if block_id is None:
                break
            blocks.append(block_id)
        return blocks

    def share_cost(self, ids: Iterable[int]) -> int:
        """How many of these cached blocks are free now: sharing them lowers `num_free` by
        that much (blocks already held by someone cost nothing)."""
        return sum(1 for block_id in ids if block_id in self._lru)

    def share(self, ids: Sequence[int]) -> None:
        """Take one more reference to each of these registered blocks (from `cached_prefix`)."""
        for block_id in ids:
            if block_id not in self._hash_of:
                raise ValueError(f"{self.name} pool: block {block_id} shared but not cached")
        for block_id in ids:
            if block_id in self._lru:
                del self._lru[block_id]
                self._refs[block_id] = 1
            else:
                self.sharing_changes += self._refs[block_id] == 1
                self._refs[block_id] += 1

    def register(self, block_id: int, content_hash: bytes) -> bool:
        """Record that a held block now holds the complete KV of `content_hash`. False when
        another block already holds that content (computed twice at once): the index keeps
        the first, and this block stays private to its holder."""
        if block_id not in self._refs:
            raise ValueError(f"{self.name} pool: block {block_id} registered but not allocated")
        holder = self._block_of.get(content_hash)
        if holder is not None:
            return holder == block_id
        if block_id in self._hash_of:
            raise ValueError(f"{self.name} pool: block {block_id} already holds other content")
        self._block_of[content_hash] = block_id
        self._hash_of[block_id] = content_hash
        return True


def blocks_for_tokens(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold `num_tokens` tokens of KV."""
    return -(-num_tokens // block_size)
