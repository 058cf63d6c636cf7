"""Linear layers with weights prepared once for the fastest matmul of their device.

On CPUs with oneDNN, weights are reordered into oneDNN's blocked layout at load time: for
the small row counts of decoding (a few to a few dozen tokens) this runs 1.5-2x faster
than a plain F.linear. For a single row in float32 on a single thread (batch-1 decode,
bound by reading the weights) MKL's GEMV over the transposed weight is ~20% faster still,
so float32 keeps that copy too: twice the weight memory, which a CPU-served model can
afford. (With more threads oneDNN's GEMV scales better and is used instead.)
Elsewhere (CUDA, CPUs without oneDNN, float16, bf16 on CPUs without AVX-512) it is
F.linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastserve.runtime.model.device_caps import onednn_bf16_usable

# Row-count hint for oneDNN's weight layout choice; decode batches are around this size.
_PACK_HINT_ROWS = 64
_PACKABLE = (torch.float32, torch.bfloat16)


def _onednn_usable(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype in _PACKABLE
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        # On CPUs without AVX-512 the bf16 reorder raises: plain F.linear runs there.
        and (weight.dtype != torch.bfloat16 or onednn_bf16_usable())
    )


class Linear:
    """y = x @ W^T + b for a fixed weight W [out, in]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, pack: bool = True):
        self.out_features, self.in_features = weight.shape
        self.bias = bias
        self.packed = pack and _onednn_usable(weight)
        self.weight_t: torch.Tensor | None = None  # [in, out] copy for single rows
        if self.packed:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_HINT_ROWS)
            if weight.dtype == torch.float32:
                self.weight_t = weight.t().contiguous()
        else:
            self.weight = weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight_t is not None and x.shape[0] == 1 and torch.get_num_threads() == 1:
            if self.bias is None:
                return torch.mm(x, self.weight_t)
            return torch.addmm(self.bias, x, self.weight_t)
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)
