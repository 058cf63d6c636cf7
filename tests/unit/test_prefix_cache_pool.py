"""The pool's prefix-cache side: chained block hashes, reference counts, LRU eviction of
cached free blocks (never of held ones), and freed blocks found again."""

import pytest

from fastserve.runtime.kv.allocator import BlockPoolExhausted, KVBlockPool
from fastserve.runtime.kv.prefix_hash import block_hash, extend_block_hashes, root_hash


def hashes(tokens, block_size=4, n=100):
    out: list[bytes] = []
    extend_block_hashes(out, tokens, block_size, n)
    return out


def test_hashes_chain_over_full_blocks_only():
    a = hashes(list(range(10)))
    assert len(a) == 2  # 10 tokens: two full blocks, the partial third is not hashed
    assert a == hashes(list(range(8)))  # the same leading blocks, the same hashes
    # Block 1 has the same tokens in both, but its parent differs: its hash differs too.
    b = hashes([99, 1, 2, 3, 4, 5, 6, 7])
    assert a[0] != b[0] and a[1] != b[1]
    assert a[1] == block_hash(a[0], [4, 5, 6, 7]) != block_hash(b[0], [4, 5, 6, 7])
    assert a[0] == block_hash(root_hash(), [0, 1, 2, 3]) != block_hash(root_hash(b"x"), [0, 1, 2, 3])
    # Same tokens in another order: other content.
    assert hashes([1, 0, 2, 3]) != hashes([0, 1, 2, 3])


def test_extend_keeps_what_is_there_and_stops_at_num_blocks():
    out: list[bytes] = []
    extend_block_hashes(out, list(range(20)), 4, 2)
    assert len(out) == 2
    first = list(out)
    extend_block_hashes(out, list(range(20)), 4, 10)
    assert out[:2] == first and len(out) == 5


def test_shared_blocks_are_counted_and_freed_by_their_last_holder():
    pool = KVBlockPool(4)
    [a] = pool.allocate(1)
    assert pool.register(a, b"h0")
    pool.share([a])  # a second job takes the same block
    assert pool.refcount(a) == 2 and pool.num_used == 1 and pool.num_free == 3
    pool.free([a])
    assert pool.refcount(a) == 1 and pool.num_free == 3  # still held by one
    pool.free([a])
    assert pool.refcount(a) == 0 and pool.num_free == 4 and pool.num_cached_free == 1
    with pytest.raises(ValueError, match="freed but not allocated"):
        pool.free([a])


def test_freed_cached_block_is_found_and_taken_back_without_copying():
    pool = KVBlockPool(3)
    blocks = pool.allocate(2)
    for block, h in zip(blocks, (b"h0", b"h1"), strict=True):
        assert pool.register(block, h)
    pool.free(blocks)
    assert pool.num_free == 3 and pool.num_cached == 2
    assert pool.cached_prefix([b"h0", b"h1", b"h2"]) == blocks
    assert pool.cached_prefix([b"h1"]) == [blocks[1]]  # the index is by hash; the caller chains
    assert pool.cached_prefix([b"zz", b"h1"]) == []  # stops at the first miss
    assert pool.share_cost(blocks) == 2
    pool.share(blocks)
    assert pool.num_free == 1 and pool.num_cached_free == 0 and pool.share_cost(blocks) == 0
    assert [pool.refcount(b) for b in blocks] == [1, 1]


def test_allocation_prefers_empty_blocks_then_evicts_least_recently_freed():
    pool = KVBlockPool(4)
    first, second = pool.allocate(2), pool.allocate(2)
    for i, block in enumerate(first + second):
        pool.register(block, bytes([i]))
    pool.free(first)  # freed first: evicted first; within a table, later entries first
    pool.free(second)
    assert pool.num_free == 4 and pool.num_cached_free == 4
    [evicted] = pool.allocate(1)
    assert evicted == first[1] and pool.num_evictions == 1
    assert pool.cached_prefix([bytes([1])]) == []  # its hash is forgotten
    assert pool.cached_prefix([bytes([0])]) == [first[0]]
    assert pool.allocate(1) == [first[0]]
    assert pool.allocate(1) == [second[1]]


def test_eviction_never_takes_a_held_block():
    pool = KVBlockPool(3)
    held = pool.allocate(2)
    for i, block in enumerate(held):
        pool.register(block, bytes([i]))
    pool.share([held[0]])
    pool.free(held)  # held[0] still has a holder, held[1] becomes cached free
    assert pool.num_free == 2
    got = pool.allocate(2)
    assert held[0] not in got and held[1] in got
    with pytest.raises(BlockPoolExhausted):
        pool.allocate(1)
    assert pool.cached_prefix([bytes([0])]) == [held[0]]  # still cached, still valid


def test_unregistered_blocks_are_reused_before_any_cached_one():
    pool = KVBlockPool(2)
    cached, plain = pool.allocate(2)
    pool.register(cached, b"c")
    pool.free([cached, plain])
    assert pool.allocate(1) == [plain] and pool.num_evictions == 0


def test_register_keeps_the_first_copy_of_a_content():
    pool = KVBlockPool(2)
    a, b = pool.allocate(2)
    assert pool.register(a, b"same")
    assert not pool.register(b, b"same")  # computed twice at once: b stays private
    assert pool.register(a, b"same")  # idempotent for the block that holds it
    pool.free([b])
    assert pool.num_cached_free == 0 and pool.num_cached == 1  # b went back as a plain block
    with pytest.raises(ValueError, match="already holds other content"):
        pool.register(a, b"other")
    with pytest.raises(ValueError, match="shared but not cached"):
        pool.share([b])
    with pytest.raises(ValueError, match="registered but not allocated"):
        pool.register(b, b"new")
