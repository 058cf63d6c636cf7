import pytest

from fastserve.runtime.kv.allocator import BlockPoolExhausted, KVBlockPool, blocks_for_tokens


def test_allocate_and_free_keep_counts():
    pool = KVBlockPool(4)
    assert pool.can_allocate(4) and not pool.can_allocate(5)
    a = pool.allocate(3)
    assert len(set(a)) == 3 and pool.num_free == 1
    with pytest.raises(BlockPoolExhausted, match="asked for 2 blocks, 1 free"):
        pool.allocate(2)
    pool.free(a)
    assert pool.num_free == 4 and pool.num_used == 0


def test_double_free_is_an_error():
    pool = KVBlockPool(2)
    ids = pool.allocate(1)
    pool.free(ids)
    with pytest.raises(ValueError, match="freed but not allocated"):
        pool.free(ids)


def test_blocks_for_tokens():
    assert blocks_for_tokens(0, 16) == 0
    assert blocks_for_tokens(1, 16) == 1
    assert blocks_for_tokens(16, 16) == 1
    assert blocks_for_tokens(17, 16) == 2
