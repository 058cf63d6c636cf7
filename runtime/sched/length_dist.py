"""The output-length distribution a size-blind policy learns online from its own requests.

Observations live in a sliding window (the newest `window` ones), so the estimate follows
a workload that drifts. Lengths are natural lengths N (what a request would generate with
no cap), clipped at `max_len`, the largest output any request may ask for:

- a request that stopped by itself after n tokens: N = n (an event);
- a request cut at its `max_tokens` after n tokens: N >= n, i.e. censored at n - 1;
- an aborted request after n tokens, or one still in flight: N > n, censored at n.

Counting only finished requests would bias the estimate short (long requests are the ones
still running, most of all under a policy that favours short ones), so censored
observations enter a Kaplan-Meier estimate of the survival function.

A window of a few hundred lengths is a spiky histogram, and a spike at length n makes the
Gittins index jump at age n (a job there "probably ends now"), so jobs of neighbouring ages
swap levels at random. `smoothing` h spreads each length n's mass evenly over
[n / (1 + h), n * (1 + h)] before the index is built: a log-scale kernel, exact for short
lengths, wider for long ones, where the samples are sparse.

Past the largest observation the data say nothing; the estimate puts the mass KM leaves
there, or 1/(finished + 1) (rule of succession) when KM leaves none, on a log-uniform tail
up to `max_len`. That keeps the index defined for every age (see gittins_table), and a
request older than everything seen gets a decreasing hazard: it is probably a long one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# Finish reasons that mean the request ended by itself (an uncensored observation).
NATURAL_REASONS = frozenset({"stop", "eos", "stop_token"})
CAP_REASONS = frozenset({"length", "max_tokens"})


@dataclass(frozen=True)
class LengthDist:
    """P(N = t) for t = 0..max_len (pmf[0] = 0), with summary numbers for logs."""

    pmf: np.ndarray  # float64, shape (max_len + 1,), sums to 1
    num_finished: int  # uncensored observations used
    num_censored: int  # censored observations used (aborted, capped, in flight)
    largest_seen: int  # largest observed value (events and censoring points)
    tail_mass: float  # mass put past `largest_seen` on the log-uniform tail
    # Mean and CV of the observations (Kaplan-Meier, before smoothing and tail); None:
    # computed from `pmf` up to `largest_seen`.
    observed: tuple[float, float] | None = None

    @property
    def max_len(self) -> int:
        return len(self.pmf) - 1

    @property
    def mean(self) -> float:
        return _moments(self.pmf)[0]

    @property
    def cv(self) -> float:
        return _moments(self.pmf)[1]

    def observed_moments(self) -> tuple[float, float]:
        """Mean and CV up to the largest observation (the assumed tail left out)."""
        if self.observed is not None:
            return self.observed
        return _moments(self.pmf[: self.largest_seen + 1])


def _moments(pmf: np.ndarray) -> tuple[float, float]:
    total = float(pmf.sum())
    if total <= 0:
        return 0.0, 0.0
    t = np.arange(len(pmf), dtype=float)
    mean = float(np.dot(t, pmf)) / total
    var = float(np.dot(t * t, pmf)) / total - mean * mean
    return mean, (math.sqrt(max(var, 0.0)) / mean if mean > 0 else 0.0)


class LengthWindow:
    """The newest `window` observations of one class of requests."""

    def __init__(self, window: int, max_len: int, smoothing: float = 0.0) -> None:
        if window < 1 or max_len < 1 or smoothing < 0:
            raise ValueError(
                f"need window >= 1, max_len >= 1, smoothing >= 0; got {window}, {max_len}, "
                f"{smoothing}"
            )
        self.max_len = max_len
        self.smoothing = smoothing
        # (value, censored): censored means N > value, else N == value.
        self._obs: deque[tuple[int, bool]] = deque(maxlen=window)
        self.num_finished = 0  # uncensored observations in the window
        self.total_finished = 0  # uncensored observations ever made (not just in the window)

    def __len__(self) -> int:
        return len(self._obs)

    def observe_end(self, tokens: int, reason: str) -> None:
        """A request ended after generating `tokens` tokens, for `reason`."""
        if reason in NATURAL_REASONS:
            self.observe(tokens, censored=False)
        elif reason in CAP_REASONS:
            self.observe(tokens - 1, censored=True)  # N >= tokens
        else:
            self.observe(tokens, censored=True)  # aborted or failed: it would have gone on

    def observe(self, value: int, censored: bool) -> None:
        """One observation: N == value, or N > value if censored."""
        if censored and value < 1:
            return  # N > 0 is known of every request: no information
        if not censored and value < 1:
            raise ValueError(f"a finished request has at least one token, got {value}")
        if len(self._obs) == self._obs.maxlen and not self._obs[0][1]:
            self.num_finished -= 1  # the oldest, about to fall out, was a finished one
        self._obs.append((value, censored))
        if not censored:
            self.num_finished += 1
            self.total_finished += 1

    def estimate(
        self, in_flight: Iterable[int] = (), prior: Sequence[int] = (), prior_weight: float = 0.0
    ) -> LengthDist:
        """Kaplan-Meier over the window plus `in_flight` lengths (censored), with the tail.

        `prior`: pseudo-lengths (finished) that count `prior_weight` requests each: what a
        policy believed before it saw enough of its own requests, fading as they arrive.
        """
        m = self.max_len
        events: list[int] = []
        cens: list[int] = []
        for value, censored in self._obs:
            (cens if censored else events).append(value)
        cens.extend(k for k in in_flight if k >= 1)
        ev = np.asarray(events, dtype=np.int64)
        ce = np.asarray(cens, dtype=np.int64)
        # N > v >= m means the clipped length is exactly m: an event at m.
        ev = np.concatenate([np.minimum(ev, m), np.full(int((ce >= m).sum()), m, np.int64)])
        ce = ce[ce < m]
        d = np.bincount(ev, minlength=m + 1).astype(float)
        if prior and prior_weight > 0:
            pseudo = np.minimum(np.asarray(prior, dtype=np.int64), m)
            d += prior_weight * np.bincount(pseudo, minlength=m + 1)
        c = np.bincount(ce, minlength=m + 1).astype(float)
        # At risk at t: events at >= t, plus censored at >= t (they survived through t).
        at_risk = (d[::-1].cumsum() + c[::-1].cumsum())[::-1]
        hazard = np.divide(d, at_risk, out=np.zeros_like(d), where=at_risk > 0)
        hazard[0] = 0.0
        survival = np.cumprod(1.0 - hazard)  # S(t) = P(N > t)
        observed = np.nonzero(at_risk > 0)[0]
        largest = int(observed[-1]) if len(observed) else 0
        pmf = np.zeros(m + 1)
        pmf[1 : largest + 1] = survival[:largest] - survival[1 : largest + 1]
        observed = _moments(pmf)
        if self.smoothing > 0:
            pmf = log_smooth(pmf, self.smoothing)
        tail = float(survival[largest]) if largest > 0 else 1.0
        if largest < m and tail <= 0.0:
            tail = 1.0 / (len(events) + 1)
            pmf *= 1.0 - tail
        if largest >= m:
            tail = 0.0
        elif tail > 0.0:
            t = np.arange(largest + 1, m + 1, dtype=float)
            pmf[largest + 1 :] = tail * (1.0 / t) / (1.0 / t).sum()
        pmf /= pmf.sum()
        return LengthDist(pmf, len(events), len(cens), largest, tail, observed)


def log_smooth(pmf: np.ndarray, h: float) -> np.ndarray:
    """Each t's mass spread evenly over [t / (1 + h), t * (1 + h)] (within 1..len - 1)."""
    m = len(pmf) - 1
    t = np.nonzero(pmf)[0]
    lo = np.maximum(1, np.ceil(t / (1.0 + h)).astype(np.int64))
    hi = np.minimum(m, np.floor(t * (1.0 + h)).astype(np.int64))
    hi = np.maximum(hi, lo)
    share = pmf[t] / (hi - lo + 1)
    diff = np.zeros(m + 2)
    np.add.at(diff, lo, share)
    np.add.at(diff, hi + 1, -share)
    out = np.cumsum(diff[: m + 1])
    out[0] = 0.0
    return np.clip(out, 0.0, None)


def quantile_lengths(dist: LengthDist, n: int) -> list[int]:
    """n evenly spread quantiles of `dist`: its shape as n pseudo-lengths (a prior)."""
    cdf = np.cumsum(dist.pmf)
    q = (np.arange(n) + 0.5) / n
    return [int(t) for t in np.clip(np.searchsorted(cdf, q * cdf[-1]), 1, dist.max_len)]
