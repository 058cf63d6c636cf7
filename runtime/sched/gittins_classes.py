"""What GittinsPolicy knows of a job beyond its age: its class, its prior, its end.

Small pure helpers kept apart from the policy: request classes (a table per class), the
prior's lengths before anything is learned, and why a job ended when nobody said.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from statistics import NormalDist

from fastserve.runtime.sched.job import Job


def max_tokens_class(job: Job) -> str:
    """Bucket by max_tokens, in powers of two (e.g. 'le256')."""
    return f"le{1 << max(0, math.ceil(math.log2(max(1, job.sampling.max_tokens))))}"


def prompt_len_class(job: Job) -> str:
    """Bucket by prompt length, in powers of two from 32 (e.g. 'p256'): code completion's
    long prompts and short outputs learn a table apart from chat's short prompts."""
    return f"p{1 << max(5, math.ceil(math.log2(max(1, len(job.prompt_ids)))))}"


CLASSIFIERS: dict[str, Callable[[Job], Hashable]] = {
    "max_tokens": max_tokens_class,
    "prompt_len": prompt_len_class,
}


def lognormal_quantiles(n: int, mean: float, cv: float, max_len: int) -> list[int]:
    """n evenly spread quantiles of a lognormal length (the prior), in [1, max_len]."""
    if n == 0:
        return []
    sigma = math.sqrt(math.log1p(cv * cv))
    mu = math.log(mean) - sigma * sigma / 2
    dist = NormalDist(mu, sigma)
    return [
        min(max_len, max(1, round(math.exp(dist.inv_cdf((i + 0.5) / n))))) for i in range(n)
    ]


def infer_reason(job: Job) -> str:
    """Why a job ended, when `on_finished` did not say: cap, stop token, or abort."""
    params, out = job.sampling, job.output_ids
    if len(out) >= params.max_tokens:
        return "length"
    if out and len(out) >= params.min_tokens:
        last = out[-1]
        if (not params.ignore_eos and last in job.eos_token_ids) or last in params.stop_token_ids:
            return "stop"
    return job.pending_finish or "abort"
