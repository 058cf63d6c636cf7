"""The C kernels (runtime/model/kernels) against the torch code they replace."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from fastserve.runtime.kv.pools import DeviceKVPool
from fastserve.runtime.kv.spec import KVCacheSpec
from fastserve.runtime.model.attention import SeqInput, build_metadata, write_kv
from fastserve.runtime.model.config import RopeScaling
from fastserve.runtime.model.cpu_kernels import CpuKernels
from fastserve.runtime.model.decode_attention import decode_attention
from fastserve.runtime.model.gguf_convert import QUANT_FILE, convert_gguf
from fastserve.runtime.model.layers import RotaryEmbedding, rms_norm, silu_and_mul
from fastserve.runtime.model.quant import QuantFormat, QuantWeight, from_gguf_blocks
from fastserve.runtime.model.runner import ModelRunner
from tests.engine_driver import greedy_generate
from tests.model_fixtures import make_tiny_llama_dir
from tests.unit.test_model_gguf import write_tiny_gguf

KERNELS = CpuKernels.load()
pytestmark = pytest.mark.skipif(KERNELS is None, reason="the C kernels cannot run here")
_GGML = {
    QuantFormat.Q4_1: gguf.GGMLQuantizationType.Q4_1,
    QuantFormat.Q8_0: gguf.GGMLQuantizationType.Q8_0,
}


def _quantized(fmt: QuantFormat, rows: int, cols: int, seed: int) -> QuantWeight:
    """A random matrix quantized by gguf's own quantizer, in our layout."""
    dense = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    return from_gguf_blocks(gguf.quants.quantize(dense, _GGML[fmt]), fmt, rows, cols)


@pytest.mark.parametrize("fmt", list(QuantFormat))
def test_unpacked_blocks_dequantize_like_gguf(fmt):
    dense = np.random.default_rng(0).standard_normal((8, 96)).astype(np.float32)
    raw = gguf.quants.quantize(dense, _GGML[fmt])
    want = torch.from_numpy(gguf.quants.dequantize(raw, _GGML[fmt]).astype(np.float32))
    got = from_gguf_blocks(raw, fmt, 8, 96).dequantize()
    assert torch.equal(got, want.reshape(8, 96))


@pytest.mark.parametrize("fmt", list(QuantFormat))
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 16, 33])
@pytest.mark.parametrize("out_features", [12, 13, 64])
def test_quant_matmul_matches_the_dense_matmul(fmt, rows, out_features):
    w = _quantized(fmt, out_features, 96, seed=rows)
    x = torch.randn(rows, 96, generator=torch.Generator().manual_seed(out_features))
    bias = torch.randn(out_features)
    assert KERNELS is not None
    got = KERNELS.quant_matmul(x, w, bias)
    want = (x.double() @ w.dequantize().double().t() + bias.double()).float()
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_quant_matmul_rejects_a_wrong_shape():
    w = _quantized(QuantFormat.Q4_1, 8, 64, seed=0)
    assert KERNELS is not None
    with pytest.raises(ValueError, match="does not match"):
        KERNELS.quant_matmul(torch.randn(2, 32), w)


def test_norms_and_silu_match_torch():
    assert KERNELS is not None
    x, h = torch.randn(5, 96), torch.randn(5, 96)
    w = torch.rand(96) + 0.5
    torch.testing.assert_close(KERNELS.rms_norm(x, w, 1e-5), rms_norm(x, w, 1e-5))
    residual = x.clone()
    normed = KERNELS.add_rms_norm(residual, h, w, 1e-6)
    torch.testing.assert_close(residual, x + h)
    torch.testing.assert_close(normed, rms_norm(x + h, w, 1e-6))
    gate_up = torch.randn(3, 2 * 100) * 4  # 100: a tail past the 8-wide vector loop
    torch.testing.assert_close(KERNELS.silu_mul(gate_up), silu_and_mul(gate_up))


def _cache(block_size: int = 4, blocks: int = 24, kv_heads: int = 2, dim: int = 16) -> DeviceKVPool:
    spec = KVCacheSpec(
        num_layers=1, num_kv_heads=kv_heads, head_dim=dim, block_size=block_size,
        dtype=torch.float32,
    )  # fmt: skip
    return DeviceKVPool(spec, blocks, torch.device("cpu"))


def test_rope_and_cache_write_match_torch():
    assert KERNELS is not None
    heads, kv_heads, dim, bs = 4, 2, 16, 4
    rope = RotaryEmbedding(dim, 64, 10000.0, RopeScaling(), torch.float32, "cpu")
    seqs = [SeqInput(1, 9, [5, 2, 7]), SeqInput(6, 3, [1, 11, 3])]
    meta = build_metadata(seqs, bs, torch.device("cpu"))
    qkv = torch.randn(meta.num_tokens, (heads + 2 * kv_heads) * dim)
    ours, theirs = _cache(), _cache()
    got = qkv.clone()
    KERNELS.rope_write_kv(
        got, meta.positions, rope.cos, rope.signed_sin, ours.key_blocks(0), ours.value_blocks(0),
        meta.slots, heads, kv_heads,
    )  # fmt: skip
    want = qkv.clone()
    cos, sin = rope.tables(meta.positions)
    rope.apply_(want[:, : (heads + kv_heads) * dim].view(meta.num_tokens, -1, dim), cos, sin)
    kv = want[:, heads * dim :].view(meta.num_tokens, 2, kv_heads, dim)
    write_kv(theirs.key_blocks(0), theirs.value_blocks(0), meta, kv)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ours.storage, theirs.storage)


# Head layouts: SmolLM2's (9 heads on 3 KV heads, 64 dims), a group wider than one score
# tile (8 on 1), dims not a multiple of 32 (40); job counts that make every (job, KV head)
# a task; one or two jobs (their blocks split between tasks and merged after, a short job
# leaving a split empty).
@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("heads,kv_heads,dim", [(4, 2, 16), (9, 3, 64), (8, 1, 40)])
@pytest.mark.parametrize("num_jobs", [1, 2, 4])
def test_decode_attention_matches_torch(block_size, heads, kv_heads, dim, num_jobs):
    assert KERNELS is not None
    pool = _cache(block_size, blocks=40, kv_heads=kv_heads, dim=dim)
    pool.storage.normal_(generator=torch.Generator().manual_seed(1))
    # Lengths from one key to several blocks, not multiples of 8; tables out of order.
    seqs = [SeqInput(1, 4 * block_size - 1, [9, 0, 30, 4]), SeqInput(1, 0, [3]),
            SeqInput(1, 2 * block_size + 1, [17, 8, 21]), SeqInput(1, 13, [1, 2, 5, 6])]  # fmt: skip
    seqs = seqs[:num_jobs]
    meta = build_metadata(seqs, block_size, torch.device("cpu"))
    assert meta.decode is not None
    qkv = torch.randn(len(seqs), (heads + 2 * kv_heads) * dim)
    got = KERNELS.decode_attention(
        qkv, pool.key_blocks(0), pool.value_blocks(0), meta.decode.blocks, meta.decode.starts,
        meta.decode.lens, heads, dim**-0.5,
    )  # fmt: skip
    q = qkv[:, : heads * dim].reshape(len(seqs), heads, dim)
    want = decode_attention(q, pool.key_blocks(0), pool.value_blocks(0), meta.decode, dim**-0.5)
    torch.testing.assert_close(got, want.reshape(len(seqs), -1), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    """A tiny GGUF with Q4_1 and Q8_0 matrices, converted (dense + quantized copies)."""
    base = tmp_path_factory.mktemp("quant")
    hf = make_tiny_llama_dir(base / "hf", seed=5)
    q4 = tuple(f"blk.{i}.{n}.weight" for i in (0, 1) for n in ("attn_q", "attn_k", "attn_v",
               "attn_output", "ffn_gate", "ffn_up", "ffn_down"))  # fmt: skip
    write_tiny_gguf(hf, base / "tiny.gguf", quantize=("output.weight",), quantize_q4_1=q4)
    return convert_gguf(base / "tiny.gguf", base / "out")


def test_quantized_decoding_matches_the_dense_path(quantized_dir, monkeypatch):
    assert (quantized_dir / QUANT_FILE).exists()
    fast = ModelRunner(quantized_dir, "float32", "cpu", num_device_blocks=64, block_size=4)
    layer = fast.model.layers[1]
    assert layer.gate_up.quant is not None and fast.model.lm_head.quant is not None
    monkeypatch.setattr(CpuKernels, "load", classmethod(lambda cls: None))
    plain = ModelRunner(quantized_dir, "float32", "cpu", num_device_blocks=64, block_size=4)
    assert plain.model.kernels is None and plain.model.layers[1].gate_up.quant is None
    prompts = [list(range(10, 30)), list(range(40, 47)), [5]]
    for together in (True, False):  # batched decode rows and batch-1 decode
        got = greedy_generate(fast, prompts, 12, together=together)
        want = greedy_generate(plain, prompts, 12, together=together)
        for g, w in zip(got, want, strict=True):
            assert g.tokens == w.tokens
