"""Latency and throughput metrics over finished requests (simulated or measured).

Definitions (all times in seconds on one clock):
- JCT: finish - arrival (job completion time, the paper's main metric).
- TTFT: first token - arrival.
- TPOT: (finish - first token) / (output tokens - 1), over requests with >= 2 tokens.
- ITL (inter-token latency): the gap between two consecutive streamed chunks of a request
  (one token each here; vLLM's definition, chunk by chunk), over every gap of every request.
- E2E latency (vLLM's E2EL) is the JCT.
- normalized latency: JCT / output tokens (the paper's "per-token latency").
- throughput: output tokens (and requests, and prompt + output tokens) per second from the
  first arrival to the last finish.
- goodput: requests per second (over that same span) that met every SLO given, TTFT, TPOT
  and E2EL each at most its bound, as `vllm bench serve --goodput` counts them (a
  one-token request's TPOT is 0 there).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SLO_METRICS = ("ttft", "tpot", "e2el")  # what --goodput bounds, in this order
PERCENTILES = ("mean", "median", "p90", "p99")


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

    @property
    def tpot(self) -> float:
        """Seconds per output token after the first (0 for one token, as vLLM counts it)."""
        if self.output_len <= 1:
            return 0.0
        return (self.finish - self.first_token) / (self.output_len - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reservoir:
    """A uniform random sample of at most `capacity` values (Vitter's algorithm R) and the
    exact count, sum and maximum of all of them: percentiles of every inter-token gap of a
    long run in bounded memory, exact while the run has fewer gaps than `capacity`."""

    def __init__(self, capacity: int = 100_000, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.count = 0
        self.total = 0.0
        self.max = -math.inf
        self._sample: list[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.max = max(self.max, value)
        if len(self._sample) < self.capacity:
            self._sample.append(value)
        else:  # keep each of the `count` values seen with probability capacity / count
            j = self._rng.randrange(self.count)
            if j < self.capacity:
                self._sample[j] = value

    def values(self) -> np.ndarray:
        return np.asarray(self._sample, dtype=float)

    def stats(self, prefix: str) -> dict[str, float]:
        """`percentile_stats` of the sample, with the exact mean and count."""
        out = percentile_stats(self.values(), prefix)
        if self.count:
            out[f"{prefix}_mean"] = self.total / self.count
        out[f"{prefix}_count"] = float(self.count)
        return out


def percentile_stats(values: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean, median, p90 and p99 (numpy's linear interpolation, as vLLM uses)."""
    if values.size == 0:
        return {f"{prefix}_{k}": float("nan") for k in PERCENTILES}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean": float(values.mean()),
        f"{prefix}_median": float(p50),
        f"{prefix}_p90": float(p90),
        f"{prefix}_p99": float(p99),
    }


def parse_goodput(items: Sequence[str]) -> dict[str, float]:
    """`ttft:MS tpot:MS e2el:MS` (any of them) -> {metric: seconds}; as vLLM's flag."""
    slo: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or name not in SLO_METRICS:
            raise ValueError(f"--goodput takes {'/'.join(SLO_METRICS)}:MS pairs, got {item!r}")
        ms = float(value)
        if not ms >= 0:  # also refuses nan
            raise ValueError(f"--goodput {name} must be a non-negative number of ms, got {value}")
        slo[name] = ms / 1e3
    return slo


def goodput(records: Sequence[RequestRecord], slo: Mapping[str, float], span: float) -> float:
    """Requests per second over `span` that met every SLO in `slo` ({metric: seconds})."""
    value = {"ttft": lambda r: r.ttft, "tpot": lambda r: r.tpot, "e2el": lambda r: r.jct}
    good = sum(1 for r in records if all(value[k](r) <= bound for k, bound in slo.items()))
    return good / span if span > 0 else 0.0


def summarize(
    records: Sequence[RequestRecord],
    *,
    itl: Reservoir | None = None,
    slo: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Mean/median/p90/p99 of JCT, TTFT, TPOT, normalized latency and (given the streamed
    gaps) ITL; throughputs; goodput under `slo` ({metric: seconds}); counts."""
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
        summary.update(percentile_stats(values, prefix))
    if itl is not None:
        summary.update(itl.stats("itl"))
    if slo:
        summary["goodput_requests_per_s"] = goodput(records, slo, span)
        summary.update({f"slo_{k}_s": v for k, v in slo.items()})
    summary.update(
        {
            "throughput_tokens_per_s": out_tokens / span,
            "throughput_total_tokens_per_s": (out_tokens + sum(r.prompt_len for r in records))
            / span,
            "throughput_requests_per_s": len(records) / span,
            "makespan": span,
            "preemptions": sum(r.num_preemptions for r in records),
            "swaps": sum(r.num_swaps for r in records),
        }
    )
    return summary


def vllm_names(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary under `vllm bench serve`'s result names and units (ms), for tools that
    read those files; E2EL is the JCT."""
    out: dict[str, float] = {}
    for key, name in (
        ("num_requests", "completed"), ("makespan", "duration"),
        ("throughput_requests_per_s", "request_throughput"),
        ("goodput_requests_per_s", "request_goodput"),
        ("throughput_tokens_per_s", "output_throughput"),
        ("throughput_total_tokens_per_s", "total_token_throughput"),
    ):  # fmt: skip
        if key in summary:
            out[name] = float(summary[key])
    for ours, theirs in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("jct", "e2el")):
        for stat in PERCENTILES:
            if f"{ours}_{stat}" in summary:
                out[f"{stat}_{theirs}_ms"] = 1e3 * float(summary[f"{ours}_{stat}"])
    return out
