"""Linear layers with weights prepared once for the fastest matmul of their device.

On CPUs with oneDNN, weights are reordered into oneDNN's blocked layout at load time: for
the small row counts of decoding (a few to a few dozen tokens) this runs 1.5-2x faster
than a plain F.linear. For a single row in float32 on a single thread (batch-1 decode,
bound by reading the weights) MKL's GEMV over the transposed weight is ~20% faster still,
so float32 keeps that copy too: twice the weight memory, which a CPU-served model can
afford. (With more threads oneDNN's GEMV scales better and is used instead.)
bfloat16 on CPUs without native bf16 (AVX2 only; oneDNN cannot pack bf16 there): one row
(batch-1 decode) runs torch's bf16 GEMV, which reads half the bytes of float32 (measured
13 GB/s of bf16 against 11-18 of float32: ~30% faster per token); more rows would run
torch's bf16 GEMM at 15 GFLOP/s, so they run on a packed float32 copy (134 GFLOP/s at 512
rows) with the input widened and the output rounded back to bf16. bf16 values are exact
in float32 and both paths accumulate in float32, so they differ only in summation order.
Elsewhere (CUDA, CPUs without oneDNN, float16) it is F.linear.
Where the checkpoint kept the matrix quantized (quant.py) and the C kernels run, a few
float32 rows (decoding) read the quantized blocks instead: 0.75 bytes a weight (Q4_1)
against float32's 4, rebuilt to the same float32 values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastserve.runtime.model.cpu_kernels import CpuKernels
from fastserve.runtime.model.device_caps import onednn_bf16_usable
from fastserve.runtime.model.quant import QuantFormat, QuantWeight

# Row-count hint for oneDNN's weight layout choice; decode batches are around this size.
_PACK_HINT_ROWS = 64
_PACKABLE = (torch.float32, torch.bfloat16)
# Up to how many rows the quantized kernels beat oneDNN's packed float32 matmul. Measured
# as whole SmolLM2 decode steps on a 2-core AVX2 EPYC (benchmarks/bench_kernels.py): 16
# rows 60 ms against 108, 32 rows 111 against 149; prefill chunks (hundreds of rows) are
# compute-bound and run dense.
QUANT_MAX_ROWS = {QuantFormat.Q4_1: 64, QuantFormat.Q8_0: 64}


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


def _needs_wide_twin(weight: torch.Tensor) -> bool:
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.bfloat16
        and torch.backends.mkldnn.is_available()
        and not onednn_bf16_usable()
    )


class Linear:
    """y = x @ W^T + b for a fixed weight W [out, in]."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        pack: bool = True,
        quant: QuantWeight | None = None,
        kernels: CpuKernels | None = None,
    ):
        self.out_features, self.in_features = weight.shape
        self.bias = bias
        self.packed = pack and _onednn_usable(weight)
        self.weight_t: torch.Tensor | None = None  # [in, out] copy for single rows
        self.wide: Linear | None = None  # float32 twin for multi-row bf16 on AVX2 CPUs
        usable = quant is not None and kernels is not None and weight.dtype == torch.float32
        self.quant = quant if usable else None
        self.kernels = kernels
        self.quant_rows = QUANT_MAX_ROWS[quant.format] if quant is not None else 0
        if self.packed:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_HINT_ROWS)
            if weight.dtype == torch.float32 and self.quant is None:
                self.weight_t = weight.t().contiguous()
        else:
            self.weight = weight
            if pack and _needs_wide_twin(weight):
                wide_bias = bias.float() if bias is not None else None
                self.wide = Linear(weight.float(), wide_bias)
                self.wide.weight_t = None  # the twin never serves single rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.quant is not None and x.shape[0] <= self.quant_rows:
            assert self.kernels is not None
            return self.kernels.quant_matmul(x, self.quant, self.bias)
        if self.wide is not None and x.shape[0] > 1:
            return self.wide(x.float()).to(x.dtype)
        if self.weight_t is not None and x.shape[0] == 1 and torch.get_num_threads() == 1:
            if self.bias is None:
                return torch.mm(x, self.weight_t)
            return torch.addmm(self.bias, x, self.weight_t)
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)
