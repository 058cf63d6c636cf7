"""KV spec sizing, pools, and bit-exact asynchronous block swaps."""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime.kv.pools import DeviceKVPool, HostKVPool
from fastserve.runtime.kv.spec import KVCacheSpec
from fastserve.runtime.kv.swapper import BlockSwapper, coalesce_runs
from fastserve.runtime.model.config import ModelConfig

SPEC = KVCacheSpec(num_layers=3, num_kv_heads=2, head_dim=8, block_size=4, dtype=torch.float32)


def test_block_bytes_and_budget():
    assert SPEC.bytes_per_block == 2 * 3 * 2 * 8 * 4 * 4
    assert SPEC.blocks_for_bytes(SPEC.bytes_per_block * 10 + 5) == 10
    assert SPEC.blocks_for_bytes(0) == 0
    bf16 = KVCacheSpec(3, 2, 8, 4, torch.bfloat16)
    assert bf16.bytes_per_block * 2 == SPEC.bytes_per_block


CONFIG_30_LAYERS = {
    "model_type": "llama",
    "vocab_size": 10,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 30,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}


def test_spec_for_model_splits_kv_heads_over_tp():
    cfg = ModelConfig.from_dict(CONFIG_30_LAYERS)
    spec = KVCacheSpec.for_model(cfg, 16, torch.bfloat16, tp_size=2)
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (30, 2, 8)
    with pytest.raises(ValueError):
        KVCacheSpec.for_model(cfg, 16, torch.bfloat16, tp_size=3)


def test_spec_for_layout_is_the_largest_rank():
    cfg = ModelConfig.from_dict(CONFIG_30_LAYERS)
    spec = KVCacheSpec.for_layout(cfg, 16, torch.float32, tp=2, pp=4)  # stages of 8, 8, 7, 7
    assert (spec.num_layers, spec.num_kv_heads) == (8, 2)
    assert spec.bytes_per_block == 2 * 8 * 2 * 8 * 16 * 4
    assert KVCacheSpec.for_layout(cfg, 16, torch.float32) == KVCacheSpec.for_model(
        cfg, 16, torch.float32
    )
    with pytest.raises(ValueError):
        KVCacheSpec.for_layout(cfg, 16, torch.float32, tp=3)


def test_pool_views_have_per_layer_shapes_and_alias_storage():
    pool = DeviceKVPool(SPEC, 5, "cpu")
    assert pool.key(1).shape == (5, 4, 2, 8)  # [blocks, block_size, kv_heads, head_dim]
    assert pool.value(2).shape == (5, 4, 2, 8)
    assert pool.key_blocks(1).shape == (5, 2, 8, 4)  # keys transposed per block
    assert pool.value_blocks(1).shape == (5, 2, 4, 8)
    pool.key(1)[3, 2] = 7.0  # token slot 2 of block 3, layer 1
    assert pool.key_blocks(1)[3, :, :, 2].eq(7.0).all()
    assert pool.storage[3, 1, 0].eq(7.0).sum() == 2 * 8  # that slot only, both heads
    assert pool.storage[3, 1, 1].eq(0.0).all()  # values untouched
    pool.value(0)[4, 1, 1] = 3.0
    assert pool.value_blocks(0)[4, 1, 1].eq(3.0).all()
    assert pool.nbytes == 5 * SPEC.bytes_per_block


def test_coalesce_runs():
    assert coalesce_runs([4, 5, 6, 9], [0, 1, 2, 3]) == [(4, 0, 3), (9, 3, 1)]
    assert coalesce_runs([], []) == []
    with pytest.raises(ValueError):
        coalesce_runs([1], [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_offload_clobber_upload_is_bit_exact(dtype):
    spec = KVCacheSpec(3, 2, 8, 4, dtype)
    device = DeviceKVPool(spec, 12, "cuda" if torch.cuda.is_available() else "cpu")
    host = HostKVPool(spec, 6)
    swapper = BlockSwapper(device, host)
    gen = torch.Generator().manual_seed(0)
    device.storage.copy_(torch.randn(device.storage.shape, generator=gen).to(dtype))
    src = [7, 2, 3, 11]
    original = device.storage[src].clone()
    out = swapper.offload(src, [5, 0, 1, 3])
    out.wait()
    assert out.done()
    device.storage.fill_(float("nan"))  # clobber every device block
    back = swapper.upload([5, 0, 1, 3], [1, 9, 10, 4])  # to different block ids
    back.wait()
    assert back.done()
    restored = device.storage[[1, 9, 10, 4]]
    assert torch.equal(
        restored.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
        original.view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
    )
    swapper.close()


def test_handles_poll_and_fence_orders_compute_after_uploads():
    device = DeviceKVPool(SPEC, 8, "cpu")
    host = HostKVPool(SPEC, 8)
    host.storage.normal_()
    swapper = BlockSwapper(device, host)
    handles = [swapper.upload([i], [i]) for i in range(8)]
    swapper.fence_uploads({3})
    assert torch.equal(device.storage[3], host.storage[3])
    swapper.fence_uploads()
    assert all(h.done() for h in handles)
    assert torch.equal(device.storage, host.storage)
    swapper.close()


def test_out_of_range_block_ids_are_rejected():
    swapper = BlockSwapper(DeviceKVPool(SPEC, 4, "cpu"), HostKVPool(SPEC, 2))
    with pytest.raises(IndexError):
        swapper.offload([0, 4], [0, 1])
    with pytest.raises(IndexError):
        swapper.upload([2], [0])
    swapper.close()


def test_empty_copy_is_done_at_once():
    swapper = BlockSwapper(DeviceKVPool(SPEC, 4, "cpu"), HostKVPool(SPEC, 2))
    assert swapper.offload([], []).done()
    swapper.close()
