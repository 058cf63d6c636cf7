"""Latency and throughput metrics over finished requests (simulated or measured).

Definitions (all times in seconds on one clock):
- JCT: finish - arrival (job completion time, the paper's main metric).
- TTFT: first token - arrival.
- TPOT: (finish - first token) / (output tokens - 1), over requests with >= 2 tokens.
- normalized latency: JCT / output tokens (the paper's "per-token latency").
- throughput: output tokens (and requests) per second from the first arrival to the last
  finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(slots=True)
class RequestRecord:
    """One finished request."""

    request_id: str
    arrival: float
    prompt_len: int
    output_len: int  # tokens generated
    first_token: float  # time of the first generated token
    finish: float  # time of the last token
    num_preemptions: int = 0
    num_swaps: int = 0

    @property
    def jct(self) -> float:
        return self.finish - self.arrival

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival

    @property
    def normalized_latency(self) -> float:
        return self.jct / max(1, self.output_len)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(values: np.ndarray, prefix: str) -> dict[str, float]:
    if values.size == 0:
        return {f"{prefix}_{k}": float("nan") for k in ("mean", "median", "p90", "p99")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean": float(values.mean()),
        f"{prefix}_median": float(p50),
        f"{prefix}_p90": float(p90),
        f"{prefix}_p99": float(p99),
    }


def summarize(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Mean/median/p90/p99 of JCT, TTFT, TPOT and normalized latency; throughput; counts."""
    if not records:
        return {"num_requests": 0}
    jct = np.array([r.jct for r in records])
    ttft = np.array([r.ttft for r in records])
    tpot = np.array(
        [(r.finish - r.first_token) / (r.output_len - 1) for r in records if r.output_len > 1]
    )
    norm = np.array([r.normalized_latency for r in records])
    start = min(r.arrival for r in records)
    end = max(r.finish for r in records)
    span = max(end - start, 1e-12)
    out_tokens = sum(r.output_len for r in records)
    summary: dict[str, float] = {"num_requests": len(records)}
    for values, prefix in ((jct, "jct"), (ttft, "ttft"), (tpot, "tpot"), (norm, "norm_latency")):
        summary.update(_stats(values, prefix))
    summary.update(
        {
            "throughput_tokens_per_s": out_tokens / span,
            "throughput_requests_per_s": len(records) / span,
            "makespan": span,
            "preemptions": sum(r.num_preemptions for r in records),
            "swaps": sum(r.num_swaps for r in records),
        }
    )
    return summary
