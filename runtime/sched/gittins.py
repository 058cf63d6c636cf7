"""Gittins-index scheduling over total work, prefill included: FastServe's default policy.

Skip-join MLFQ is least-attained-service: right for heavy-tailed lengths, wrong for nearly
uniform ones (jobs progress in lockstep and all finish late). The Gittins index is the
optimal size-blind rank for mean response time in the single-server queue: FCFS-like where
lengths are uniform, LAS-like where they are heavy tailed, better than both in between
(research/gittins.md). What is known at arrival is used: the prompt, so the prefill's cost;
only the output length is unknown, and its distribution is learned online.

- Work: a job's service is its prefill (known, priced by the cost model) plus its decode
  tokens (unknown). The unit is one job's share of a decode step at the largest batch seen
  (or `unit_batch`): a prefill stalls the whole batch, so it is counted in the batch's
  token slots. Before its first token a job's index charges its remaining prefill, less
  what the prefix cache holds (gittins_table's tangent), so a short prompt with an unknown
  output is not queued behind long prefills, and a long prefill does not start ahead of
  many short jobs.
- Learning (length_dist): a sliding window of ended requests per class; capped, aborted
  and in-flight requests are censored observations (Kaplan-Meier), smoothed on a log scale
  (`length_smoothing`). The tables start from a lognormal prior (`prior_mean_output`,
  `prior_cv`), so the policy ranks by total work from the first request; from
  `learn_after` finished requests on they are learned, every `learn_after` ends, with the
  prior blended in as pseudo-requests that fade out by `min_completions` (gittins_model);
  then every `rebuild_every` ends or `rebuild_interval` seconds (if any ended).
- Order: by the exact index, highest first; ties by arrival. Hysteresis: a job that ran in
  the previous iteration counts its index times `hysteresis`, so a newcomer preempts it
  only when clearly more urgent (each preemption costs a KV move or a refill).
  `job.level` shows the quantised index (`num_levels` slices of log G) for logs.
- Cap: a request's `max_tokens` ends its distribution (tables per cap). Benchmarks that
  force lengths with max_tokens pass `ignore_max_tokens` (reading the cap would make this
  an oracle there).
- Starvation: a job unserved for `starvation_threshold` seconds (default
  `STARVATION_QUANTA` batch-1 decode steps) is boosted ahead of all for `boost_tokens`
  tokens (at most `max_boosted` jobs at once), then returns to its index. Simulated: more
  or longer boosts traded mean JCT for p99 one for one (32 tokens sat in the middle); at
  skip-join's 400 steps a 3x overload boosted nearly every job in turn, drifting towards
  FCFS, and 1000 took the code preset's mean from 1.15x to 1.14x the oracle's and its p99
  from 1.12x to 1.11x FCFS's (benchmarks/sim_presets.py, 3 seeds).

Aborts: `remove` cannot tell an abort from a finish, so the core should call
`on_finished(job, reason)` right before `remove(job)`; without it the reason is inferred
from the job (its last token, its cap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

from fastserve.runtime.logging import get_logger
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.gittins_classes import CLASSIFIERS, infer_reason, lognormal_quantiles
from fastserve.runtime.sched.gittins_model import POOLED, GittinsModel
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.policy import SchedulingPolicy

STARVATION_QUANTA = 1000.0  # default starvation bound, in batch-1 decode steps


@dataclass
class _Entry:
    job: Job
    seq: int  # arrival order
    cls: Hashable
    boost_until: int | None = None  # boosted to level 0 until this many tokens
    observed: bool = False  # its end already entered the windows
    key: tuple[Any, ...] = ()  # inputs of the cached index
    index: float = 0.0  # its Gittins index at those inputs
    level: int = 0  # the index quantised (logs, metrics)


class GittinsPolicy(SchedulingPolicy):
    """Gittins index over total work on a learned, censoring-aware output distribution."""

    name: ClassVar[str] = "gittins"

    def __init__(
        self,
        cost_model: CostModel | None = None,
        *,
        num_levels: int = 12,
        window: int = 500,
        min_completions: int = 100,
        rebuild_every: int = 50,
        rebuild_interval: float = 60.0,
        max_output_len: int = 4096,
        max_bins: int = 4096,
        starvation_threshold: float | None = None,
        boost_tokens: int = 32,
        max_boosted: int | None = 1,
        unit_batch: int | None = None,
        class_by: str | Callable[[Job], Hashable] | None = None,
        max_cap_tables: int = 64,
        ignore_max_tokens: bool = False,
        length_smoothing: float = 0.5,
        hysteresis: float = 2.0,
        prior_mean_output: float = 64.0,
        prior_cv: float = 2.0,
        prior_requests: int = 64,
        learn_after: int = 10,
    ) -> None:
        """See the module doc. `class_by`: None (one class), "max_tokens", or a function
        job -> class. `max_boosted`: most jobs boosted at once (None: no limit).
        `ignore_max_tokens`: for benchmarks that force each length with max_tokens and
        ignore_eos. The cap is then the length itself: reading it would make this an
        oracle, and counting "length" ends as censored would leave nothing to learn.
        `length_smoothing`: h of the log-scale kernel over learned lengths (length_dist).
        `prior_requests`: how many lognormal quantiles make the prior (0: none; then the
        order is by arrival until `min_completions` requests finished)."""
        if not 2 <= num_levels <= 64 or min(min_completions, rebuild_every, learn_after) < 1:
            raise ValueError(
                "need 2 <= num_levels <= 64, min_completions, rebuild_every, learn_after >= 1"
            )
        if hysteresis < 1 or prior_mean_output < 1 or prior_cv <= 0 or prior_requests < 0:
            raise ValueError("need hysteresis >= 1, prior_mean_output >= 1, prior_cv > 0")
        self.cost_model = cost_model
        self.rebuild_every = rebuild_every
        self.rebuild_interval = rebuild_interval
        step = cost_model.estimate_decode(1) if cost_model is not None else 0.01
        if starvation_threshold is None:
            starvation_threshold = STARVATION_QUANTA * step
        self.starvation_threshold = starvation_threshold
        self.check_interval = starvation_threshold / 10
        self.boost_tokens = boost_tokens
        self.max_boosted = max_boosted
        self.unit_batch = unit_batch
        self.hysteresis = hysteresis
        self._class_of = CLASSIFIERS[class_by] if isinstance(class_by, str) else class_by
        if ignore_max_tokens and class_by == "max_tokens":
            raise ValueError("class_by='max_tokens' reads the cap that ignore_max_tokens hides")
        self.ignore_max_tokens = ignore_max_tokens
        self.log = get_logger(component="gittins")
        self.model = GittinsModel(
            num_levels=num_levels,
            window=window,
            min_completions=min_completions,
            max_output_len=max_output_len,
            max_bins=max_bins,
            max_cap_tables=max_cap_tables,
            log=self.log,
            smoothing=length_smoothing,
            prior_lengths=lognormal_quantiles(
                prior_requests, prior_mean_output, prior_cv, max_output_len
            ),
            learn_after=learn_after,
        )
        self._jobs: dict[str, _Entry] = {}
        self._running: set[str] = set()
        self._seq = 0
        self._max_batch = 1
        self._ended_since_rebuild = 0
        self._last_rebuild = -math.inf
        self._next_check = -math.inf
        self.num_rebuilds = 0
        self.num_promotions = 0
        self.log.info(
            "gittins_prior",
            mean=prior_mean_output,
            cv=prior_cv,
            requests=prior_requests,
            needed=min_completions,
        )

    # -- interface ------------------------------------------------------------------------

    @property
    def learning(self) -> bool:
        """True while the tables still come from the prior (or, without one, from nothing)."""
        return not self.model.learned

    def add(self, job: Job, now: float) -> None:
        if job.total_service == 0.0:
            job.last_served = job.arrival  # waiting time counts from arrival
        self._seq += 1
        cls = self._class_of(job) if self._class_of is not None else POOLED
        self.model.add_class(cls)
        self._jobs[job.request_id] = _Entry(job, self._seq, cls)

    def on_finished(self, job: Job, reason: str) -> None:
        entry = self._jobs.get(job.request_id)
        if entry is not None and not entry.observed:
            self._observe(entry, reason)

    def remove(self, job: Job) -> None:
        entry = self._jobs.pop(job.request_id, None)
        if entry is None:
            return
        self._running.discard(job.request_id)
        if not entry.observed:
            self._observe(entry, infer_reason(job))

    def priority_order(self, now: float) -> list[Job]:
        self._maybe_rebuild(now)
        if now >= self._next_check:
            self._boost_starved(now)
            self._next_check = now + self.check_interval
        if not self.model.ready:  # no prior and nothing learned yet: arrival order
            return [e.job for e in sorted(self._jobs.values(), key=lambda e: e.seq)]
        running, hysteresis = self._running, self.hysteresis

        def key(e: _Entry) -> tuple[bool, float, int]:
            index = self._cached_index(e)
            if e.job.request_id in running:
                index *= hysteresis
            return (not self._boosted(e), -index, e.seq)

        return [e.job for e in sorted(self._jobs.values(), key=key)]

    def on_served(self, served: list[tuple[Job, float]], now: float) -> None:
        super().on_served(served, now)
        self._running = {job.request_id for job, _ in served}
        self._max_batch = max(self._max_batch, len(served))

    # -- the index ------------------------------------------------------------------------

    def index(self, job: Job) -> float:
        """The job's current Gittins index (needs tables: the prior's or learned ones)."""
        entry = self._jobs[job.request_id]
        cap = self.model.max_output_len if self.ignore_max_tokens else job.sampling.max_tokens
        table = self.model.table(entry.cls, cap)
        tokens = len(job.output_ids)
        if tokens == 0:
            return table.before_prefill(self.prefill_units(job))
        return table.at(tokens)

    def prefill_units(self, job: Job) -> float:
        """The job's remaining prefill in decode-step units (see the module doc)."""
        if self.cost_model is None:
            return 1.0
        left = job.prefill_left  # a cached prefix is not prefilled again
        batch = self.unit_batch or self._max_batch
        unit = self.cost_model.estimate_decode(batch) / batch
        return self.cost_model.estimate_prefill(left) / unit if unit > 0 else 1.0

    def _cached_index(self, entry: _Entry) -> float:
        job = entry.job
        tokens = len(job.output_ids)
        # The index changes only with tokens, prefill left (progress or a cache hit), the
        # unit or a rebuild.
        key = (self.model.version, tokens, job.prefill_left if tokens == 0 else 0, self._max_batch)
        if key != entry.key:
            entry.index = self.index(job)
            entry.level = self.model.level(entry.index)
            entry.key = key
        job.level = 0 if self._boosted(entry) else entry.level
        return entry.index

    def _boosted(self, entry: _Entry) -> bool:
        if entry.boost_until is None:
            return False
        if len(entry.job.output_ids) < entry.boost_until:
            return True
        entry.boost_until = None
        return False

    def _boost_starved(self, now: float) -> None:
        limit = now - self.starvation_threshold
        boosted = sum(1 for e in self._jobs.values() if e.boost_until is not None)
        starved = [
            e for e in self._jobs.values() if e.boost_until is None and e.job.last_served <= limit
        ]
        starved.sort(key=lambda e: (e.job.last_served, e.seq))  # longest wait first
        if self.max_boosted is not None:
            starved = starved[: max(0, self.max_boosted - boosted)]
        for entry in starved:
            entry.boost_until = len(entry.job.output_ids) + self.boost_tokens
            self.num_promotions += 1

    # -- learning -------------------------------------------------------------------------

    def _observe(self, entry: _Entry, reason: str) -> None:
        entry.observed = True
        if self.ignore_max_tokens and reason == "length":
            reason = "stop"  # the forced length is the request's true length
        self.model.observe_end(entry.cls, len(entry.job.output_ids), reason)
        self._ended_since_rebuild += 1

    def _maybe_rebuild(self, now: float) -> None:
        if self._ended_since_rebuild == 0:
            return
        model = self.model
        if not model.learned:
            if model.pooled_finished < model.learn_after:
                return
            trigger = "enough_finished"
        elif model.blended and self._ended_since_rebuild >= model.learn_after:
            trigger = "prior_fading"
        elif self._ended_since_rebuild >= self.rebuild_every:
            trigger = "completions"
        elif now - self._last_rebuild >= self.rebuild_interval:
            trigger = "interval"
        else:
            return
        self.rebuild(now, trigger)

    def rebuild(self, now: float, trigger: str = "manual") -> None:
        """Re-learn the distributions now; in-flight jobs count as censored observations."""
        self._ended_since_rebuild = 0
        was_learning = self.learning
        in_flight = [(e.cls, len(e.job.output_ids)) for e in self._jobs.values()]
        if not self.model.rebuild(in_flight, trigger):
            return
        self._last_rebuild = now
        self.num_rebuilds += 1
        if was_learning:
            self.log.info("gittins_active", finished=self.model.pooled_finished)
