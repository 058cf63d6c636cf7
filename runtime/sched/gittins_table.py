"""Gittins index tables over output tokens, and their quantisation into priority levels.

A job that has generated k tokens has (natural) length N > k. Its Gittins index is

    G(k) = sup_{b > k} (F(b) - F(k)) / (W(b) - W(k)),   W(x) = E[min(N, x)] = sum_{t<x} P(N > t)

the best ratio of "chance to finish by b" to "expected work to get there", in decode steps.
On the plane of points P_b = (W(b), F(b)) it is the steepest chord from P_k to a point on
its right: the slope of the upper convex hull's edge leaving P_k. Building the hull right
to left (Andrew's monotone chain) gives the whole table in O(M) (research/gittins.md).

- Cap: a job with `max_tokens` m stops at m at the latest, so its curve ends at
  (W(m), 1): F jumps to 1 there. Each cap has its own table (same hull routine).
- Prefill: before its first token a job must first pay its prefill, c decode-step units,
  and the prefill yields token 1. Its index is the steepest chord from Q = (1 - c, 0) to
  the points b >= 1 (c = 1 is P_0 itself), a tangent to the saved hull, found by binary
  search. A long prompt thus starts low, as skip-join's start queue does.
- Bins: ages are grouped in bins of `width` tokens (1 up to 4096 tokens of max length) so
  the table stays O(max_bins); a job's index is that of its bin's start.
- Levels: log G is cut into `num_levels` equal slices between the smallest and largest
  index of the ages a job reaches with probability >= VISIT_MIN; level 0 is the highest
  index (most urgent), as MLFQ's queue 0. Levels rise where G rises (uniform-like lengths
  -> FCFS) and fall where it falls (heavy tails -> least attained service).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastserve.runtime.sched.length_dist import LengthDist

VISIT_MIN = 1e-3  # ages reached by fewer jobs than this do not stretch the level range
_MIN_PREFILL_UNITS = 1e-3  # keeps Q strictly left of P_1 (a prefill is never free)


def hull_indices(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[int]]:
    """G[i] = max_{j>i} (ys[j] - ys[i]) / (xs[j] - xs[i]) for i < n - 1 (xs increasing),
    and the upper hull of points 1..n-1 (indices, leftmost first)."""
    n = len(xs)
    g = [0.0] * (n - 1)
    stack = [n - 1]  # hull of the points right of i; stack[-1] is the leftmost vertex
    hull_from_1 = [n - 1]
    for i in range(n - 2, -1, -1):
        if i == 0:
            hull_from_1 = stack[::-1]
        xi, yi = xs[i], ys[i]
        while len(stack) >= 2:
            a, b = stack[-1], stack[-2]
            # a is hidden (seen from P_i) if the chord to b is at least as steep.
            if (ys[a] - yi) * (xs[b] - xi) <= (ys[b] - yi) * (xs[a] - xi):
                stack.pop()
            else:
                break
        top = stack[-1]
        g[i] = (ys[top] - yi) / (xs[top] - xi)
        stack.append(i)
    return g, hull_from_1


def tangent_slope(qx: float, qy: float, hx: Sequence[float], hy: Sequence[float]) -> float:
    """Steepest slope from Q to a vertex of an upper hull (x ascending) lying right of Q."""

    # slope(Q, H_i) rises while the hull edge leaving H_i is steeper than it, then falls.
    def past_peak(i: int) -> bool:
        if i == len(hx) - 1:
            return True
        edge = (hy[i + 1] - hy[i]) / (hx[i + 1] - hx[i])
        return edge <= (hy[i] - qy) / (hx[i] - qx)

    i = bisect.bisect_left(range(len(hx)), True, key=past_peak)
    return (hy[i] - qy) / (hx[i] - qx)


@dataclass
class CapTable:
    """Index by age bin for jobs with one cap; the hull answers prefill queries."""

    cap: int  # the job stops at this many tokens at the latest
    width: int  # tokens per bin
    index: list[float]  # index[j]: Gittins index of a job with j * width tokens generated
    hull_x: list[float]  # hull of the points b >= 1 (for the prefill tangent)
    hull_y: list[float]

    def at(self, tokens: int) -> float:
        """Index of a job that generated `tokens` (>= 1) tokens."""
        return self.index[min(tokens // self.width, len(self.index) - 1)]

    def before_prefill(self, prefill_units: float) -> float:
        """Index of a job that still has to pay `prefill_units` of prefill for token 1."""
        qx = 1.0 - max(prefill_units, _MIN_PREFILL_UNITS)
        return tangent_slope(qx, 0.0, self.hull_x, self.hull_y)


def bin_width(max_len: int, max_bins: int) -> int:
    return max(1, math.ceil(max_len / max_bins))


def build_cap_table(dist: LengthDist, cap: int, width: int) -> CapTable:
    """The table for jobs capped at `cap` tokens (cap <= dist.max_len)."""
    support = np.nonzero(dist.pmf)[0]
    # A job ends by the last length with mass at the latest (learned ones have mass up to
    # max_len; see length_dist): cutting there keeps W strictly increasing.
    cap = max(1, min(cap, int(support[-1]) if len(support) else 1))
    if cap < 2 * width:  # too few bins to tell the first token from the start: exact
        width = 1
    pmf = dist.pmf
    cdf = np.cumsum(pmf)  # F(t) = P(N <= t)
    survival = 1.0 - cdf
    survival[survival < 0] = 0.0
    # W(t) = sum_{u<t} S(u): W[0] = 0, W[1] = S(0) = 1.
    work = np.concatenate([[0.0], np.cumsum(survival)])
    points = list(range(0, cap, width))
    xs = [float(work[b]) for b in points] + [float(work[cap])]
    ys = [float(cdf[b]) for b in points] + [1.0]
    g, hull = hull_indices(xs, ys)
    return CapTable(cap, width, g, [xs[v] for v in hull], [ys[v] for v in hull])


@dataclass
class Levels:
    """Cuts log G into `num_levels` slices; level 0 holds the highest indices."""

    num_levels: int
    log_lo: float
    log_hi: float

    @classmethod
    def fit(cls, table: CapTable, dist: LengthDist, num_levels: int) -> Levels:
        survival = 1.0 - np.cumsum(dist.pmf)
        visited = [
            g
            for j, g in enumerate(table.index)
            if g > 0 and survival[min(j * table.width, len(survival) - 1)] >= VISIT_MIN
        ]
        if not visited:
            visited = [g for g in table.index if g > 0] or [1.0]
        lo, hi = math.log(min(visited)), math.log(max(visited))
        if hi - lo < 1e-9:
            hi = lo + 1.0
        return cls(num_levels, lo, hi)

    def level(self, index: float) -> int:
        if index <= 0:
            return self.num_levels - 1
        x = (self.log_hi - math.log(index)) / (self.log_hi - self.log_lo)
        return min(self.num_levels - 1, max(0, int(x * self.num_levels)))

    def boundaries(self) -> list[float]:
        """The index where each level starts, from level 0 down (for logs)."""
        step = (self.log_hi - self.log_lo) / self.num_levels
        return [math.exp(self.log_hi - step * i) for i in range(1, self.num_levels)]
