"""Typed calls into the C kernels (kernels/*.c) on float32 CPU tensors.

Every method takes and returns torch tensors and checks what the C side assumes (dtype,
contiguity, shapes), so a wrong call raises here instead of reading the wrong memory.
The kernels release the GIL (ctypes does) and run on torch's OpenMP threads.
"""

from __future__ import annotations

import ctypes

import torch

from fastserve.runtime.model.kernels.build import load_kernels
from fastserve.runtime.model.quant import QuantFormat, QuantWeight

_MAX_HEAD_DIM = 512  # the rotary kernel's scratch row and decode attention's staging


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(t: torch.Tensor, what: str, dtype: torch.dtype = torch.float32) -> None:
    if t.dtype != dtype or t.device.type != "cpu":
        raise ValueError(f"{what}: expected a CPU {dtype} tensor, got {t.dtype} on {t.device}")


class CpuKernels:
    """The loaded kernel library; build one with `CpuKernels.load()`."""

    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib

    @classmethod
    def load(cls) -> CpuKernels | None:
        """The kernels, or None where they cannot run (see kernels/build.py)."""
        lib = load_kernels()
        return None if lib is None else cls(lib)

    def quant_matmul(
        self, x: torch.Tensor, w: QuantWeight, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [M, K] float32 @ W^T (+ bias) -> [M, N] float32, W in its quantized blocks."""
        _check(x, "quant_matmul input")
        if x.dim() != 2 or x.shape[1] != w.in_features:
            raise ValueError(f"input {tuple(x.shape)} does not match [M, {w.in_features}]")
        x = x.contiguous()
        m = x.shape[0]
        y = torch.empty((m, w.out_features), dtype=torch.float32)
        if m == 0:
            return y
        n, k = w.out_features, w.in_features
        if w.format is QuantFormat.Q4_1:
            self._lib.fs_q4_1_matmul(
                w.qs.data_ptr(), w.d.data_ptr(), _ptr(w.m), _ptr(bias), x.data_ptr(),
                y.data_ptr(), m, n, k,
            )  # fmt: skip
        else:
            self._lib.fs_q8_0_matmul(
                w.qs.data_ptr(), w.d.data_ptr(), _ptr(bias), x.data_ptr(), y.data_ptr(), m, n, k
            )
        return y

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """RMSNorm of each row of x [T, H] (float32 throughout)."""
        _check(x, "rms_norm input")
        x = x.contiguous()
        out = torch.empty_like(x)
        self._lib.fs_rms_norm(x.data_ptr(), weight.data_ptr(), out.data_ptr(), *x.shape, eps)
        return out

    def add_rms_norm(
        self, x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """x += h in place (x contiguous [T, H]); returns rms_norm(x)."""
        _check(x, "residual")
        _check(h, "residual update")
        if not x.is_contiguous() or x.shape != h.shape:
            raise ValueError(f"residual {tuple(x.shape)} and update {tuple(h.shape)} differ")
        h = h.contiguous()
        out = torch.empty_like(x)
        self._lib.fs_add_rms_norm(
            x.data_ptr(), h.data_ptr(), weight.data_ptr(), out.data_ptr(), *x.shape, eps
        )
        return out

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up from the fused [T, 2F] projection -> [T, F]."""
        _check(gate_up, "gate/up")
        gate_up = gate_up.contiguous()
        t, two_f = gate_up.shape
        out = torch.empty((t, two_f // 2), dtype=torch.float32)
        self._lib.fs_silu_mul(gate_up.data_ptr(), out.data_ptr(), t, two_f // 2)
        return out

    def rope_write_kv(
        self,
        qkv: torch.Tensor,
        positions: torch.Tensor,
        cos: torch.Tensor,
        signed_sin: torch.Tensor,
        key_blocks: torch.Tensor,
        value_blocks: torch.Tensor,
        slots: torch.Tensor,
        num_heads: int,
        num_kv_heads: int,
    ) -> None:
        """Rotate q and k of qkv [T, (H + 2 KVH) D] in place and store k and v into the
        cache slots (slot = block * block_size + offset) of one layer's block views."""
        _, kvh, dim, bs = key_blocks.shape
        _check(qkv, "qkv")
        _check(key_blocks, "key cache")
        _check(positions, "positions", torch.int64)
        _check(slots, "slots", torch.int64)
        if kvh != num_kv_heads or dim > _MAX_HEAD_DIM or not qkv.is_contiguous():
            raise ValueError("qkv or cache layout does not match the model")
        if qkv.shape[1] != (num_heads + 2 * num_kv_heads) * dim:
            raise ValueError(f"qkv width {qkv.shape[1]} does not match the heads")
        if key_blocks.stride(0) != value_blocks.stride(0):
            raise ValueError("key and value views must share a block stride")
        self._lib.fs_rope_write_kv(
            qkv.data_ptr(), positions.data_ptr(), cos.data_ptr(), signed_sin.data_ptr(),
            key_blocks.data_ptr(), value_blocks.data_ptr(), slots.data_ptr(), qkv.shape[0],
            num_heads, num_kv_heads, dim, bs, key_blocks.stride(0),
        )  # fmt: skip

    def decode_attention(
        self,
        qkv: torch.Tensor,
        key_blocks: torch.Tensor,
        value_blocks: torch.Tensor,
        tables: torch.Tensor,
        starts: torch.Tensor,
        lens: torch.Tensor,
        num_heads: int,
        scale: float,
    ) -> torch.Tensor:
        """Attention of the first len(lens) rows of qkv (one query each) over their jobs'
        cached keys: job b's blocks are tables[starts[b]:starts[b + 1]], lens[b] keys.
        Returns [B, H * D]."""
        _, kvh, dim, bs = key_blocks.shape
        _check(qkv, "qkv")
        _check(tables, "block tables", torch.int64)
        if dim > _MAX_HEAD_DIM or num_heads % kvh:
            raise ValueError(f"{num_heads} heads on {kvh} KV heads of {dim} dims: not supported")
        batch = lens.shape[0]
        out = torch.empty((batch, num_heads * dim), dtype=torch.float32)
        self._lib.fs_decode_attention(
            qkv.data_ptr(), qkv.stride(0), key_blocks.data_ptr(), value_blocks.data_ptr(),
            tables.data_ptr(), starts.data_ptr(), lens.data_ptr(), out.data_ptr(), batch,
            num_heads, kvh, dim, bs, key_blocks.stride(0), scale,
        )  # fmt: skip
        return out
