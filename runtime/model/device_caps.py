"""What the device computes fastest: the default dtype, and whether oneDNN's bf16 path runs;
and dtype names made torch dtypes.

Measured on this project's 2-core AMD EPYC machines (AVX2, no AVX-512): float32 matmuls ran
at 134 GFLOP/s on 512 rows and bfloat16 at 15 (no native bf16 dot products, so every
multiply converts); a 1-row bf16 GEMV read weights at 13 GB/s against float32's 11-18, too
little to pay for the 9x slower prefill. CPUs with AVX-512 BF16 or AMX-BF16 (Sapphire
Rapids and later) multiply bf16 natively, and GPUs do too: bfloat16 is the default there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A dtype name of the command line or config (or a torch dtype) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is missing)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True if the CPU multiplies bf16 natively (AVX-512 BF16 or AMX-BF16)."""
    return any(flag in cpu_flags() for flag in _NATIVE_BF16_FLAGS)


def onednn_bf16_usable() -> bool:
    """oneDNN's bf16 weight reorder needs AVX-512 (BW/VL/DQ) or AVX-NE-CONVERT."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def auto_dtype(device: torch.device) -> str:
    """The default dtype for `device`: bfloat16 where it is native, else float32."""
    if device.type == "cuda":
        return "bfloat16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"
