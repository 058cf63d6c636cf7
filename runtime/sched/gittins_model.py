"""What GittinsPolicy learns: per-class length windows, their index tables, and the levels.

Every request belongs to the pooled class and, optionally, to one more class (for example
its max_tokens bucket). A class gets its own tables once its window holds
`min_completions` finished requests; until then its requests use the pooled tables. The
levels are fitted on the pooled table only, so levels of different classes compare.
Tables are built lazily per (class, cap) and kept, at most `max_cap_tables` per class,
until the next rebuild. With `prior_lengths` the pooled class starts from a prior (those
lengths, as if finished) instead of from nothing, so the tables exist from the first
request. The pooled class learns from `learn_after` finished requests on, with the prior
still in its estimate as pseudo-requests whose weight fades linearly to nothing at
`min_completions` finished: a short benchmark (or a fresh server's first minute) is ranked
by what it has seen so far without betting everything on a handful of lengths.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastserve.runtime.sched.gittins_table import CapTable, Levels, bin_width, build_cap_table
from fastserve.runtime.sched.length_dist import LengthDist, LengthWindow, quantile_lengths

POOLED = "*"  # the class every request belongs to
SHRINK_PSEUDO_REQUESTS = 64  # quantiles of the pooled estimate a young class starts from


@dataclass
class _Class:
    window: LengthWindow
    dist: LengthDist | None = None  # None until the class has enough finished requests
    tables: dict[int, CapTable] = field(default_factory=dict)  # by cap, since the rebuild


class GittinsModel:
    """Length windows -> distributions -> index tables -> levels."""

    def __init__(
        self,
        *,
        num_levels: int,
        window: int,
        min_completions: int,
        max_output_len: int,
        max_bins: int,
        max_cap_tables: int,
        log: Any,
        smoothing: float = 0.0,
        prior_lengths: Sequence[int] = (),
        learn_after: int | None = None,
    ) -> None:
        self.num_levels = num_levels
        self.window = window
        self.min_completions = min_completions
        # Without a prior there is nothing to blend: learn once enough requests finished.
        self.learn_after = min_completions
        if learn_after is not None and prior_lengths:
            self.learn_after = min(learn_after, min_completions)
        self.prior_lengths = list(prior_lengths)
        self.blended = False  # the last rebuild's pooled estimate still held the prior
        self.max_output_len = max_output_len
        self.width = bin_width(max_output_len, max_bins)
        self.max_cap_tables = max_cap_tables
        self.smoothing = smoothing
        self.log = log
        self.classes: dict[Hashable, _Class] = {POOLED: self._new_class()}
        self.levels: Levels | None = None  # None until the prior or a rebuild sets them
        self.version = 0  # bumped by every rebuild (invalidates cached levels)
        self.learned = False  # True once real requests replaced the prior
        if prior_lengths:
            prior = LengthWindow(len(prior_lengths), max_output_len, smoothing)
            for n in prior_lengths:
                prior.observe_end(int(n), "stop")
            pooled = self.classes[POOLED]
            pooled.dist = prior.estimate()
            self.levels = Levels.fit(
                self._cap_table(pooled, max_output_len), pooled.dist, num_levels
            )
            self.version = 1

    @property
    def ready(self) -> bool:
        return self.levels is not None

    @property
    def pooled_finished(self) -> int:
        """Finished (uncensored) requests in the pooled window."""
        return self.classes[POOLED].window.num_finished

    def add_class(self, name: Hashable) -> None:
        if name not in self.classes:
            self.classes[name] = self._new_class()

    def observe_end(self, name: Hashable, tokens: int, reason: str) -> None:
        for cls in {name, POOLED}:
            self.classes[cls].window.observe_end(tokens, reason)

    def table(self, name: Hashable, max_tokens: int) -> CapTable:
        """The table for a request of class `name` asking for at most `max_tokens`."""
        cls = self.classes[name]
        if cls.dist is None:
            cls = self.classes[POOLED]
        return self._cap_table(cls, min(max_tokens, self.max_output_len))

    def level(self, index: float) -> int:
        assert self.levels is not None
        return self.levels.level(index)

    def rebuild(self, in_flight: Iterable[tuple[Hashable, int]], trigger: str) -> bool:
        """Re-estimate every class (in-flight (class, tokens) are censored observations);
        False, keeping the old tables, if the pooled window has too few finished."""
        lengths: dict[Hashable, list[int]] = {name: [] for name in self.classes}
        for name, tokens in in_flight:
            lengths[name].append(tokens)
            if name != POOLED:
                lengths[POOLED].append(tokens)
        weight = self.prior_weight()
        dists = {
            POOLED: self._estimate(
                self.classes[POOLED].window, lengths[POOLED], self.prior_lengths, weight
            )
        }
        if dists[POOLED] is None:
            return False  # aborts crowded the finished requests out of the window
        self.blended = weight > 0
        # A young class starts from the pooled shape, counted as `min_completions` requests,
        # and fades out as its own requests finish.
        shape = quantile_lengths(dists[POOLED], SHRINK_PSEUDO_REQUESTS)
        for name, cls in self.classes.items():
            if name != POOLED:
                each = self._fade(cls.window) * self.min_completions / len(shape)
                dists[name] = self._estimate(cls.window, lengths[name], shape, each)
        for name, cls in self.classes.items():
            cls.dist, cls.tables = dists[name], {}
        pooled = self.classes[POOLED]
        assert pooled.dist is not None
        main = self._cap_table(pooled, self.max_output_len)
        self.levels = Levels.fit(main, pooled.dist, self.num_levels)
        self.version += 1
        self.learned = True
        for name, cls in self.classes.items():
            if cls.dist is not None:
                self._log_table(name, cls, trigger)
        return True

    def prior_weight(self) -> float:
        """What one prior pseudo-request counts for now (1 at first, 0 from
        `min_completions` finished requests on)."""
        return self._fade(self.classes[POOLED].window) if self.prior_lengths else 0.0

    def _fade(self, window: LengthWindow) -> float:
        """1 with nothing finished, falling linearly to 0 at `min_completions` finished."""
        return max(0.0, 1.0 - window.total_finished / self.min_completions)

    def _estimate(
        self, window: LengthWindow, in_flight: list[int], pseudo: Sequence[int], weight: float
    ) -> LengthDist | None:
        """The window's estimate with `pseudo` lengths weighing `weight` requests each;
        None until `learn_after` of its requests finished."""
        if window.num_finished < self.learn_after:
            return None
        return window.estimate(in_flight, pseudo, weight)

    def _new_class(self) -> _Class:
        return _Class(LengthWindow(self.window, self.max_output_len, self.smoothing))

    def _cap_table(self, cls: _Class, cap: int) -> CapTable:
        table = cls.tables.get(cap)
        if table is None:
            assert cls.dist is not None
            if len(cls.tables) >= self.max_cap_tables:
                cls.tables.pop(next(iter(cls.tables)))  # the oldest; rebuilt if asked again
            table = cls.tables[cap] = build_cap_table(cls.dist, cap, self.width)
        return table

    def _log_table(self, name: Hashable, cls: _Class, trigger: str) -> None:
        """One structured line per class and rebuild: the table is observable."""
        assert cls.dist is not None and self.levels is not None
        dist, levels = cls.dist, self.levels
        mean, cv = dist.observed_moments()
        main = self._cap_table(cls, self.max_output_len)
        runs: list[tuple[int, int]] = []  # (first age, level) wherever the level changes
        for j, g in enumerate(main.index):
            if j * main.width > dist.largest_seen:
                break
            level = levels.level(g)
            if not runs or runs[-1][1] != level:
                runs.append((j * main.width, level))
        self.log.info(
            "gittins_table",
            cls=str(name),
            trigger=trigger,
            window=len(cls.window),
            finished=dist.num_finished,
            censored=dist.num_censored,
            mean=round(mean, 2),
            cv=round(cv, 3),
            largest_seen=dist.largest_seen,
            tail_mass=round(dist.tail_mass, 5),
            levels=levels.num_levels,
            smoothing=self.smoothing,
            index_range=[round(math.exp(levels.log_lo), 6), round(math.exp(levels.log_hi), 6)],
            level_by_age=runs[:32],
        )
