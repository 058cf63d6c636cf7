"""How long the engine takes for an iteration: prefill by prompt tokens, decode by batch size.

The scheduler needs this for three things, none of which may use wall time:
- skip-join: a new job's prefill time picks its entry queue (before it ever runs);
- per-job service: each job's *own* share of an iteration, so a short decode job is not
  charged for the long prompt that happened to share its batch;
- the simulator, which advances its clock with it.

Model (fitted on measurements, see `fit` and `profile`):
- prefill(n) : piecewise linear through measured (prompt tokens, seconds) knots,
  extrapolated with the last segment's slope; 0 for n <= 0.
- decode(b, ctx) = decode_base + decode_per_job * b + decode_per_context_token * ctx,
  with ctx the total context tokens the b decoding jobs attend over.
- a mixed iteration costs the sum of its prefill chunks plus one decode step for all its
  decoding jobs. That is an upper bound for engines that fuse everything into one forward
  pass (they share the weight reads), kept because it makes each job's share well defined.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A profiling callback: run one iteration with these jobs and return its measured seconds.
# new_tokens[i] is what job i feeds (a prompt length for a prefill, 1 for a decode) and
# context_lens[i] the tokens already cached for it (0 for a fresh prefill). The callback
# times the work itself, so it can synchronise the device before stopping the clock.
RunBatch = Callable[[list[int], list[int]], float]


@dataclass
class CostModel:
    """Iteration-time estimates for one engine configuration (model, parallelism, device)."""

    prefill_knots: list[tuple[int, float]]  # (prompt tokens, seconds), sorted by tokens
    decode_base: float  # seconds of a decode step, independent of batch size
    decode_per_job: float  # extra seconds per decoding job
    decode_per_context_token: float = 0.0  # extra seconds per attended context token
    meta: dict[str, Any] = field(default_factory=dict)  # free-form: model, device, date

    def __post_init__(self) -> None:
        if not self.prefill_knots:
            raise ValueError("cost model needs at least one prefill knot")
        self.prefill_knots = sorted((int(n), float(s)) for n, s in self.prefill_knots)
        self._xs = [n for n, _ in self.prefill_knots]

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def affine(
        cls,
        prefill_base: float,
        prefill_per_token: float,
        decode_base: float,
        decode_per_job: float,
        decode_per_context_token: float = 0.0,
    ) -> CostModel:
        """prefill(n) = prefill_base + prefill_per_token * n; decode as in the class doc."""
        knots = [(0, prefill_base), (1024, prefill_base + 1024 * prefill_per_token)]
        return cls(knots, decode_base, decode_per_job, decode_per_context_token)

    @classmethod
    def fit(
        cls,
        prefill_points: Iterable[tuple[int, float]],
        decode_points: Iterable[tuple[int, int, float]],
        meta: dict[str, Any] | None = None,
    ) -> CostModel:
        """Fit on measurements: (prompt tokens, s) and (batch size, context tokens, s)."""
        by_n: dict[int, list[float]] = {}
        for n, s in prefill_points:
            by_n.setdefault(int(n), []).append(float(s))
        if not by_n:
            raise ValueError("no prefill measurements")
        knots: list[tuple[int, float]] = []
        running = 0.0
        for n in sorted(by_n):
            # The fastest repeat: on a shared machine noise only ever adds time (a median of
            # three was thrown 15x off by a neighbour's burst). The running max keeps the
            # curve non-decreasing so a longer prompt never looks cheaper.
            running = max(running, min(by_n[n]))
            knots.append((n, running))
        if len(knots) == 1:  # one point: assume time proportional to tokens
            n0, s0 = knots[0]
            knots = [(0, 0.0), (n0, s0)] if n0 > 0 else [(0, s0), (1, s0)]
        base, per_job, per_ctx = _fit_decode(list(decode_points))
        return cls(knots, base, per_job, per_ctx, meta=dict(meta or {}))

    # -- estimates ------------------------------------------------------------------------

    def estimate_prefill(self, n_tokens: int) -> float:
        """Seconds to prefill `n_tokens` prompt tokens (a whole prompt or one chunk)."""
        if n_tokens <= 0:
            return 0.0
        knots, xs = self.prefill_knots, self._xs
        if len(knots) == 1:
            return knots[0][1]
        i = bisect.bisect_right(xs, n_tokens)
        # Interpolate inside the knots, extrapolate with the nearest segment outside them.
        i = min(max(i, 1), len(knots) - 1)
        (x0, y0), (x1, y1) = knots[i - 1], knots[i]
        slope = (y1 - y0) / (x1 - x0)
        return max(0.0, y0 + slope * (n_tokens - x0))

    def estimate_decode(self, batch_size: int, context_tokens: int = 0) -> float:
        """Seconds of one decode step for `batch_size` jobs attending `context_tokens` in all."""
        if batch_size <= 0:
            return 0.0
        return (
            self.decode_base
            + self.decode_per_job * batch_size
            + self.decode_per_context_token * context_tokens
        )

    def iteration_time(self, batch: Sequence[tuple[int, bool]], context_tokens: int = 0) -> float:
        """Seconds of an iteration of (num_new_tokens, is_prefill) entries."""
        return sum(self.service_shares(batch, context_tokens))

    def service_shares(
        self, batch: Sequence[tuple[int, bool]], context_tokens: int = 0
    ) -> list[float]:
        """Each entry's own service in seconds; they sum to the iteration's estimated time.

        A prefill entry is charged its prefill cost; the decode entries split the decode
        step equally (they all wait for the same step, whatever their context).
        `context_tokens` is the total context of the decode entries.
        """
        num_decode = sum(1 for _, is_prefill in batch if not is_prefill)
        decode_share = (
            self.estimate_decode(num_decode, context_tokens) / num_decode if num_decode else 0.0
        )
        return [self.estimate_prefill(n) if is_prefill else decode_share for n, is_prefill in batch]

    # -- persistence ----------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "prefill_knots": [[n, s] for n, s in self.prefill_knots],
                "decode_base": self.decode_base,
                "decode_per_job": self.decode_per_job,
                "decode_per_context_token": self.decode_per_context_token,
                "meta": self.meta,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> CostModel:
        d = json.loads(text)
        return cls(
            [(int(n), float(s)) for n, s in d["prefill_knots"]],
            float(d["decode_base"]),
            float(d["decode_per_job"]),
            float(d.get("decode_per_context_token", 0.0)),
            meta=d.get("meta", {}),
        )

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path: str) -> CostModel:
        with open(path) as f:
            return cls.from_json(f.read())


def _fit_decode(points: list[tuple[int, int, float]]) -> tuple[float, float, float]:
    """Least squares t = a + b*batch + c*ctx; drops terms whose fit goes negative."""
    if not points:
        raise ValueError("no decode measurements")
    arr = np.asarray(points, dtype=float)
    bs, ctx, t = arr[:, 0], arr[:, 1], arr[:, 2]
    use_ctx = np.ptp(ctx) > 0
    use_b = np.ptp(bs) > 0
    for with_ctx in [True, False] if use_ctx else [False]:
        cols = [np.ones_like(t)]
        if use_b:
            cols.append(bs)
        if with_ctx:
            cols.append(ctx)
        coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), t, rcond=None)
        a = float(coef[0])
        b = float(coef[1]) if use_b else 0.0
        c = float(coef[-1]) if with_ctx else 0.0
        # Negative slopes are noise; a negative context term is retried without it.
        if c >= 0 and b >= 0 and a >= 0:
            return a, b, c
    # Fallback: flat model at the mean (noise swamps any trend).
    return float(t.mean()), 0.0, 0.0


def profile(
    run_batch: RunBatch,
    prefill_sizes: Sequence[int] = (16, 64, 256, 512, 1024, 2048),
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    context_lens: Sequence[int] = (128, 1024),
    repeats: int = 3,
    warmup: int = 1,
    meta: dict[str, Any] | None = None,
) -> CostModel:
    """Measure a real engine through `run_batch` (see `RunBatch`) and fit a `CostModel`.

    Prefill points run one prompt alone; decode points run `b` jobs each with a context of
    `ctx` tokens. The caller must have room for max(batch_sizes) * max(context_lens) tokens.
    """
    for _ in range(warmup):
        run_batch([prefill_sizes[0]], [0])
        run_batch([1] * batch_sizes[0], [context_lens[0]] * batch_sizes[0])
    prefill = [(n, run_batch([n], [0])) for n in prefill_sizes for _ in range(repeats)]
    decode = [
        (b, b * ctx, run_batch([1] * b, [ctx] * b))
        for b in batch_sizes
        for ctx in context_lens
        for _ in range(repeats)
    ]
    return CostModel.fit(prefill, decode, meta=meta)
