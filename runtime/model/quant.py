"""Weights kept in GGUF's block-quantized formats, for the CPU decode kernels.

A GGUF checkpoint's Q4_1 / Q8_0 tensors are stored beside the float32 conversion
(`fastserve/quantized.safetensors`, see gguf_convert.py) as plain arrays: the packed quants, and per
block of 32 weights its scale `d` (and for Q4_1 its offset `m`) widened to float32 (exact:
they are float16 in the file). The kernels rebuild every weight exactly as the float32
checkpoint holds it, so both paths compute the same model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 32  # weights per quantization block (along the input dimension)


class QuantFormat(enum.Enum):
    Q4_1 = "q4_1"  # 4-bit q with per-block scale and offset: w = d * q + m
    Q8_0 = "q8_0"  # 8-bit signed q with per-block scale: w = d * q


@dataclass
class QuantWeight:
    """One [out_features, in_features] matrix in blocks of 32 along in_features."""

    format: QuantFormat
    qs: torch.Tensor  # Q4_1: uint8 [N, K / 2] (two weights a byte); Q8_0: int8 [N, K]
    d: torch.Tensor  # float32 [N, K / 32] block scales
    m: torch.Tensor | None  # float32 [N, K / 32] block offsets (Q4_1 only)

    @property
    def out_features(self) -> int:
        return self.qs.shape[0]

    @property
    def in_features(self) -> int:
        return self.d.shape[1] * BLOCK

    def rows(self, index: np.ndarray | slice) -> QuantWeight:
        """A row subset (e.g. a rotary permutation of q/k rows); rows are whole blocks."""
        m = None if self.m is None else self.m[index].contiguous()
        return QuantWeight(self.format, self.qs[index].contiguous(), self.d[index].contiguous(), m)

    @staticmethod
    def cat_rows(parts: list[QuantWeight]) -> QuantWeight | None:
        """Stack matrices with the same format and in_features (fused qkv, gate/up);
        None when they differ, and the caller keeps the dense path."""
        first = parts[0]
        if any(p.format != first.format or p.in_features != first.in_features for p in parts):
            return None
        m = None if first.m is None else torch.cat([p.m for p in parts])  # type: ignore[misc]
        return QuantWeight(
            first.format, torch.cat([p.qs for p in parts]), torch.cat([p.d for p in parts]), m
        )

    def dequantize(self) -> torch.Tensor:
        """The float32 matrix these blocks encode (as GGUF's dequantizer computes it)."""
        n, nb = self.d.shape
        if self.format is QuantFormat.Q4_1:
            raw = self.qs.view(n, nb, BLOCK // 2)
            q = torch.cat([raw & 0x0F, raw >> 4], dim=-1).float()
            assert self.m is not None
            return (self.d.unsqueeze(-1) * q + self.m.unsqueeze(-1)).reshape(n, nb * BLOCK)
        q = self.qs.view(n, nb, BLOCK).float()
        return (q * self.d.unsqueeze(-1)).reshape(n, nb * BLOCK)

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The arrays to store under `name` (see `from_tensors`)."""
        out = {f"{name}.qs": self.qs, f"{name}.d": self.d}
        if self.m is not None:
            out[f"{name}.m"] = self.m
        return out

    @classmethod
    def from_tensors(cls, get, name: str, fmt: QuantFormat) -> QuantWeight:
        """Read back what `tensors` stored; `get(key)` returns a tensor."""
        m = get(f"{name}.m") if fmt is QuantFormat.Q4_1 else None
        return cls(fmt, get(f"{name}.qs"), get(f"{name}.d"), m)


def from_gguf_blocks(raw: np.ndarray, fmt: QuantFormat, rows: int, cols: int) -> QuantWeight:
    """Unpack GGUF's interleaved blocks (float16 scales inline) for a [rows, cols] matrix."""
    if cols % BLOCK:
        raise ValueError(f"{cols} columns are not whole blocks of {BLOCK}")
    nb = cols // BLOCK
    if fmt is QuantFormat.Q4_1:
        blocks = np.asarray(raw, dtype=np.uint8).reshape(rows, nb, 4 + BLOCK // 2)
        d = blocks[:, :, 0:2].copy().view(np.float16).astype(np.float32).reshape(rows, nb)
        m = blocks[:, :, 2:4].copy().view(np.float16).astype(np.float32).reshape(rows, nb)
        qs = blocks[:, :, 4:].reshape(rows, nb * BLOCK // 2).copy()
        return QuantWeight(fmt, torch.from_numpy(qs), torch.from_numpy(d), torch.from_numpy(m))
    blocks = np.asarray(raw, dtype=np.uint8).reshape(rows, nb, 2 + BLOCK)
    d = blocks[:, :, 0:2].copy().view(np.float16).astype(np.float32).reshape(rows, nb)
    qs = blocks[:, :, 2:].reshape(rows, nb * BLOCK).copy().view(np.int8)
    return QuantWeight(fmt, torch.from_numpy(qs), torch.from_numpy(d), None)
