"""Workloads for the simulator and benchmarks: traces, arrival processes, length samplers.

Every generator takes a numpy `Generator` (or a seed) so runs are reproducible. Lengths
are integers >= 1; caps are applied after sampling, which lowers the realised mean and CV
below the requested ones for heavy tails (report realised values, see `describe`).
"""

from __future__ import annotations

import csv
import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a workload: arrival in seconds, lengths in tokens.

    `segments` and `after` describe content for prefix caching (runtime/sim/conversations.py);
    the simulator reads only the lengths and the arrival."""

    arrival: float
    prompt_len: int
    output_len: int
    # The prompt as (content key, tokens) parts; equal keys are equal token ids, so
    # requests share a prefix exactly where their leading parts agree. () = random ids.
    segments: tuple[tuple[int, int], ...] = ()
    after: int = -1  # index of the request whose answer must arrive before this is sent


def make_requests(
    arrivals: Sequence[float], prompt_lens: Sequence[int], output_lens: Sequence[int]
) -> list[Request]:
    if not len(arrivals) == len(prompt_lens) == len(output_lens):
        raise ValueError("arrivals, prompt_lens and output_lens differ in length")
    return [
        Request(float(a), int(p), int(o))
        for a, p, o in zip(arrivals, prompt_lens, output_lens, strict=True)
    ]


def describe(requests: Sequence[Request]) -> dict[str, float]:
    """Realised rate and length statistics (mean and CV) of a workload."""
    if not requests:
        return {"num_requests": 0}
    arrivals = np.array([r.arrival for r in requests])
    span = float(arrivals.max() - arrivals.min())
    out: dict[str, float] = {
        "num_requests": len(requests),
        "rate_per_s": (len(requests) - 1) / span if span > 0 else math.inf,
    }
    for name in ("prompt_len", "output_len"):
        v = np.array([getattr(r, name) for r in requests], dtype=float)
        out[f"{name}_mean"] = float(v.mean())
        out[f"{name}_cv"] = float(v.std() / v.mean())
        out[f"{name}_max"] = float(v.max())
    return out


# -- Azure trace ---------------------------------------------------------------------------


def _timestamp_seconds(text: str) -> float:
    # "2023-11-16 18:15:46.6805900": seven fractional digits, which strptime rejects.
    date, clock = text.strip().split(" ")
    hours, minutes, seconds = clock.split(":")
    day = datetime.date.fromisoformat(date).toordinal()
    return day * 86400.0 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_azure_trace(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival seconds from the first request, prompt lengths, output lengths), by arrival.

    Columns TIMESTAMP, ContextTokens, GeneratedTokens (Azure LLM inference trace 2023).
    """
    times, prompts, outputs = [], [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            times.append(_timestamp_seconds(row["TIMESTAMP"]))
            prompts.append(int(row["ContextTokens"]))
            outputs.append(int(row["GeneratedTokens"]))
    t = np.array(times)
    idx = np.argsort(t, kind="stable")
    t = t[idx] - t[idx[0]] if len(t) else t
    return t, np.array(prompts)[idx], np.array(outputs)[idx]


def scale_lengths(
    lengths: np.ndarray, scale: float, max_len: int | None = None, min_len: int = 1
) -> np.ndarray:
    """Multiply lengths by `scale`, round, and clip to [min_len, max_len]."""
    out = np.rint(np.asarray(lengths, dtype=float) * scale).astype(int)
    return np.clip(out, min_len, max_len if max_len is not None else None)


def azure_workload(
    path: str,
    *,
    rate_scale: float = 1.0,
    prompt_scale: float = 1.0,
    output_scale: float = 1.0,
    max_prompt: int | None = None,
    max_output: int | None = None,
    start: int = 0,
    limit: int | None = None,
) -> list[Request]:
    """The trace with inter-arrival times divided by `rate_scale` (rate x rate_scale) and
    lengths multiplied by the scales and capped. `start`/`limit` select a slice of requests
    (by arrival); arrivals restart at 0."""
    t, p, o = read_azure_trace(path)
    end = None if limit is None else start + limit
    t, p, o = t[start:end], p[start:end], o[start:end]
    if len(t):
        t = (t - t[0]) / rate_scale
    return make_requests(
        t, scale_lengths(p, prompt_scale, max_prompt), scale_lengths(o, output_scale, max_output)
    )


def trace_arrivals(path: str, n: int, rate_scale: float = 1.0, start: int = 0) -> np.ndarray:
    """The first `n` arrival times of the trace (from `start`), rate-scaled."""
    t = read_azure_trace(path)[0][start : start + n]
    if len(t) < n:
        raise ValueError(f"trace has only {len(t)} requests from {start}, asked for {n}")
    return (t - t[0]) / rate_scale


# -- synthetic arrivals and lengths -------------------------------------------------------


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def poisson_arrivals(
    n: int, rate: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """`n` arrival times of a Poisson process of `rate` per second, starting at 0."""
    gaps = _rng(rng).exponential(1.0 / rate, size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def gamma_arrivals(
    n: int, rate: float, burstiness: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """`n` arrival times with gamma inter-arrival gaps, as `vllm bench serve --burstiness`:
    shape = burstiness, mean gap 1/rate, so the CV of the gaps is 1/sqrt(burstiness).
    Burstiness 1 is Poisson (drawn as `poisson_arrivals` does: same seed, same times);
    below 1 arrivals come in bursts, above 1 more evenly."""
    if burstiness <= 0 or rate <= 0:
        raise ValueError(f"need rate > 0 and burstiness > 0, got {rate}, {burstiness}")
    if burstiness == 1.0:
        return poisson_arrivals(n, rate, rng)
    gaps = _rng(rng).gamma(burstiness, 1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def _finish(x: np.ndarray, min_len: int, max_len: int | None) -> np.ndarray:
    return np.clip(np.rint(x).astype(int), min_len, max_len if max_len is not None else None)


def lognormal_lengths(
    n: int,
    mean: float,
    cv: float,
    rng: np.random.Generator | int | None = None,
    *,
    min_len: int = 1,
    max_len: int | None = None,
) -> np.ndarray:
    """Lognormal lengths with the given (pre-cap) mean and coefficient of variation."""
    sigma2 = math.log1p(cv * cv)
    mu = math.log(mean) - sigma2 / 2
    return _finish(_rng(rng).lognormal(mu, math.sqrt(sigma2), size=n), min_len, max_len)


def pareto_lengths(
    n: int,
    mean: float,
    cv: float,
    rng: np.random.Generator | int | None = None,
    *,
    min_len: int = 1,
    max_len: int | None = None,
) -> np.ndarray:
    """Pareto (type I) lengths with the given (pre-cap) mean and CV: shape a from
    CV^2 = 1 / (a (a - 2)), scale x_m = mean (a - 1) / a."""
    shape = 1.0 + math.sqrt(1.0 + 1.0 / (cv * cv))
    x_m = mean * (shape - 1.0) / shape
    return _finish(x_m * (1.0 + _rng(rng).pareto(shape, size=n)), min_len, max_len)


def bimodal_lengths(
    n: int,
    short: float,
    long: float,
    p_long: float,
    rng: np.random.Generator | int | None = None,
    *,
    spread: float = 0.2,
    min_len: int = 1,
    max_len: int | None = None,
) -> np.ndarray:
    """A share `p_long` of lengths near `long`, the rest near `short` (uniform +-spread)."""
    g = _rng(rng)
    centre = np.where(g.random(n) < p_long, long, short)
    return _finish(centre * g.uniform(1 - spread, 1 + spread, size=n), min_len, max_len)


def uniform_lengths(
    n: int, low: int, high: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Integers uniform on [low, high]."""
    return _rng(rng).integers(low, high + 1, size=n)
