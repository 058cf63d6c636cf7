"""Resolved workload settings (`benchmarks/workload_options.py`) -> the requests to replay or
simulate: arrivals, prompt and output lengths, or multi-turn conversations.

Lengths and arrivals use separate random streams (seeds [seed, 1] and [seed, 2]), so a
workload at another rate has the same lengths.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastserve.runtime.sim.conversations import ConversationShape, conversation_workload
from fastserve.runtime.sim.workload import (
    Request,
    bimodal_lengths,
    describe,
    gamma_arrivals,
    lognormal_lengths,
    make_requests,
    pareto_lengths,
    read_azure_trace,
    scale_lengths,
    uniform_lengths,
)


def _sample(
    kind: str,
    n: int,
    mean: float,
    cv: float,
    trace_values: np.ndarray,
    scale: float,
    cap: int,
    w: dict[str, Any],
    rng: np.random.Generator,
) -> np.ndarray:
    """n lengths of one distribution, capped to [1, cap]; `scale` applies to trace values."""
    if kind == "trace":
        return scale_lengths(trace_values, scale, cap)
    if kind == "lognormal":
        return lognormal_lengths(n, mean, cv, rng, max_len=cap)
    if kind == "pareto":
        return pareto_lengths(n, mean, cv, rng, max_len=cap)
    if kind == "bimodal":
        # Modes chosen so the (pre-cap) mean is `mean`: short (1-p) + ratio short p = mean.
        p, ratio = w["p_long"], w["bimodal_ratio"]
        short = mean / (1 - p + p * ratio)
        return bimodal_lengths(n, short, short * ratio, p, rng, max_len=cap)
    if kind == "uniform":
        return np.minimum(uniform_lengths(n, 1, max(1, round(2 * mean - 1)), rng), cap)
    if kind == "fixed":
        return np.full(n, min(cap, max(1, round(mean))), dtype=int)
    raise ValueError(f"unknown length distribution {kind!r}")


def build_workload(w: dict[str, Any], rate: float | None = None) -> list[Request]:
    """The requests of resolved settings `w`; `rate` (req/s) overrides w['rate']."""
    n, start = w["num_requests"], w["start"]
    rate = rate if rate is not None else w["rate"]
    needs_trace = w["arrivals"] == "trace" or "trace" in (w["prompt_lengths"], w["lengths"])
    t = p = o = np.zeros(0)
    if needs_trace:
        t, p, o = (x[start : start + n] for x in read_azure_trace(w["trace"]))
        if len(t) < n:
            raise SystemExit(f"the trace has {len(t)} requests from row {start}; asked for {n}")
    lengths_rng = np.random.default_rng([w["seed"], 1])
    if w.get("conversation"):
        return _conversations(w, n, t, rate, lengths_rng)
    if w.get("mixture"):
        prompts, outputs = _sample_mixture(w, n, lengths_rng)
    else:
        prompts, outputs = _sample_pair(w, n, p, o, lengths_rng)
    return make_requests(_arrivals(w, n, t, rate), prompts, outputs)


def _conversations(
    w: dict[str, Any], n: int, t: np.ndarray, rate: float | None, rng: np.random.Generator
) -> list[Request]:
    """Multi-turn chat (runtime/sim/conversations.py): conversation starts from the arrival
    process, answers from the output-length distribution."""
    if w["lengths"] == "trace":
        raise SystemExit("a conversation workload needs --lengths other than trace")
    try:
        shape = ConversationShape.from_setting(dict(w["conversation"]))
    except (TypeError, ValueError) as bad:
        raise SystemExit(f"conversation setting: {bad}") from None
    outputs = _sample(
        w["lengths"], n, w["mean_output"], w["cv"], t, 1.0, w["max_output"], w, rng
    )
    return conversation_workload(n, _arrivals(w, n, t, rate), outputs, shape, rng, w["max_prompt"])


def _sample_pair(
    w: dict[str, Any], n: int, p: np.ndarray, o: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths drawn independently, each from its own distribution."""
    prompts = _sample(
        w["prompt_lengths"], n, w["mean_prompt"], w["prompt_cv"], p, w["prompt_scale"],
        w["max_prompt"], w, rng,
    )  # fmt: skip
    outputs = _sample(
        w["lengths"], n, w["mean_output"], w["cv"], o, w["output_scale"], w["max_output"], w,
        rng,
    )  # fmt: skip
    return prompts, outputs


def _sample_mixture(
    w: dict[str, Any], n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each request picks a component by share, then lognormal lengths of that component."""
    parts = [tuple(float(x) for x in part) for part in w["mixture"]]
    shares = np.array([part[0] for part in parts])
    which = rng.choice(len(parts), size=n, p=shares / shares.sum())
    prompts, outputs = np.ones(n, dtype=int), np.ones(n, dtype=int)
    for k, (_, p_mean, p_cv, o_mean, o_cv) in enumerate(parts):
        idx = np.nonzero(which == k)[0]
        prompts[idx] = lognormal_lengths(len(idx), p_mean, p_cv, rng, max_len=w["max_prompt"])
        outputs[idx] = lognormal_lengths(len(idx), o_mean, o_cv, rng, max_len=w["max_output"])
    return prompts, outputs


def _arrivals(w: dict[str, Any], n: int, t: np.ndarray, rate: float | None) -> np.ndarray:
    """Arrival times: Poisson (gamma gaps with burstiness) at `rate`, or the trace's
    (rescaled to `rate` if given)."""
    if w["arrivals"] == "poisson":
        if not rate:
            raise SystemExit("Poisson arrivals need --rate")
        rng = np.random.default_rng([w["seed"], 2])
        return gamma_arrivals(n, rate, w.get("burstiness", 1.0), rng)
    arrivals = t - t[0]
    if rate:  # rescale the trace's arrival pattern to this mean rate
        span = arrivals[-1] if n > 1 else 0.0
        return arrivals * ((n - 1) / rate / span) if span > 0 else arrivals
    return arrivals / w["rate_scale"]


def workload_info(w: dict[str, Any], requests: list[Request]) -> dict[str, Any]:
    """Settings plus realised statistics (caps lower the realised mean and CV)."""
    return {**w, "realised": describe(requests)}


def describe_line(requests: list[Request]) -> str:
    d = describe(requests)
    return (
        f"{d['num_requests']} requests at {d['rate_per_s']:.3g} req/s; prompt mean "
        f"{d['prompt_len_mean']:.0f} (CV {d['prompt_len_cv']:.2f}, max {d['prompt_len_max']:.0f}),"
        f" output mean {d['output_len_mean']:.0f} (CV {d['output_len_cv']:.2f}, max "
        f"{d['output_len_max']:.0f})"
    )
