"""The decoder layer stack on the C kernels: float32 on a CPU, one rank.

Same arithmetic as LlamaModel._layer (layers.py, attention.py), fewer calls: each layer is
two norm+residual calls, one rotary+cache-write call, attention, silu*mul and the four
projections (quantized ones for decode-sized batches, see linear.py). At batch 1 that is
9 calls a layer instead of ~40 torch ops, which cost more in dispatch than in arithmetic.
Prefill chunks keep torch's SDPA for their attention (one call per job, long rows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fastserve.runtime.model.attention import AttentionMetadata, prefill_attention
from fastserve.runtime.model.cpu_kernels import CpuKernels

if TYPE_CHECKING:
    from fastserve.runtime.model.llama import LlamaModel, _Layer


def run_layers(
    model: LlamaModel,
    kernels: CpuKernels,
    x: torch.Tensor,
    meta: AttentionMetadata,
    kv_layers: list[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """The residual stream after every layer of this stage (x [T, hidden] is updated in
    place and returned)."""
    eps = model.config.rms_norm_eps
    x = x.contiguous()
    update: torch.Tensor | None = None  # the last sublayer's output, not yet added to x
    for layer, cache in zip(model.layers, kv_layers, strict=True):
        if update is None:
            normed = kernels.rms_norm(x, layer.input_norm, eps)
        else:
            normed = kernels.add_rms_norm(x, update, layer.input_norm, eps)
        attn = _attention(model, kernels, layer, normed, cache, meta)
        normed = kernels.add_rms_norm(x, layer.o_proj(attn), layer.post_norm, eps)
        update = layer.down(kernels.silu_mul(layer.gate_up(normed)))
    if update is not None:
        x.add_(update)
    return x


def _attention(
    model: LlamaModel,
    kernels: CpuKernels,
    layer: _Layer,
    normed: torch.Tensor,
    cache: tuple[torch.Tensor, torch.Tensor],
    meta: AttentionMetadata,
) -> torch.Tensor:
    qkv = layer.qkv(normed)
    rope = model.rope
    kernels.rope_write_kv(
        qkv, meta.positions, rope.cos, rope.signed_sin, cache[0], cache[1], meta.slots,
        model.num_heads, model.num_kv_heads,
    )  # fmt: skip
    outs: list[torch.Tensor] = []
    if meta.decode is not None:
        dm = meta.decode
        outs.append(
            kernels.decode_attention(
                qkv, cache[0], cache[1], dm.blocks, dm.starts, dm.lens, model.num_heads,
                model.scale,
            )  # fmt: skip
        )
    if meta.prefills:
        tokens = qkv.shape[0]
        q = qkv[:, : model.q_size].view(tokens, model.num_heads, model.head_dim)
        kv = qkv[:, model.q_size :].view(tokens, 2, model.num_kv_heads, model.head_dim)
        for seq in meta.prefills:
            out = prefill_attention(q, kv, cache[0], cache[1], seq, model.scale)
            outs.append(out.reshape(out.shape[0], -1))
    return outs[0] if len(outs) == 1 else torch.cat(outs)
