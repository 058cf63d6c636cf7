"""Job state changes for the logs: admitted, level changes, preempted and resumed.

SchedulerCore stays free of I/O: each tick it hands this collector the priority order and
the batch, the collector keeps the little state needed to tell a change from a repeat, and
the scheduler actor drains `pending` and logs it. `fastserve trace` rebuilds a request's
timeline from these lines. Only changes are recorded, never one line per token: a job that
keeps running, or keeps waiting, adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastserve.runtime.sched.job import Job

LogLevel = Literal["info", "debug"]
Event = tuple[LogLevel, str, dict[str, object]]  # (log level, event name, fields)

# An index policy (Gittins) re-levels jobs as their index moves; past this many changes of
# one job the rest go to debug so that a job oscillating at a boundary cannot flood info.
MAX_INFO_LEVEL_CHANGES = 16


class JobEvents:
    """Collects the events of the scheduler's jobs between two drains."""

    def __init__(self) -> None:
        self.pending: list[Event] = []
        self._level: dict[str, int] = {}  # last level seen; the first one is the entry level
        self._entry: dict[str, int] = {}
        self._changes: dict[str, int] = {}
        self._admitted: set[str] = set()  # scheduled at least once
        self._running: set[str] = set()  # in a batch (or still in flight) at the last tick
        self._preempted: set[str] = set()

    def on_schedule(
        self, tick: int, order: Sequence[Job], batch: Sequence[tuple[Job, int]], now: float
    ) -> None:
        """After a batch was picked: level changes, first runs, preemptions, resumptions.

        Preempted: ran at the previous tick, is not running now and not in flight (with
        pipeline parallelism a job still in an earlier tick is not preempted)."""
        fed = {job.request_id: n for job, n in batch}
        running: set[str] = set()
        for job in order:
            rid = job.request_id
            self._check_level(job, tick)
            if rid in fed:
                if rid not in self._admitted:
                    self._admitted.add(rid)
                    self._emit("info", "job_admitted", job, tick, entry_level=self._entry[rid],
                               waited_s=round(now - job.arrival, 6), tokens=fed[rid],
                               cached=job.cached_tokens)  # fmt: skip
                elif rid in self._preempted:
                    self._preempted.discard(rid)
                    self._emit("info", "job_resumed", job, tick, location=job.location.value)
            elif rid in self._running and not job.in_flight:
                self._preempted.add(rid)
                self._emit("info", "job_preempted", job, tick, location=job.location.value,
                           computed=job.num_computed, generated=len(job.output_ids))
            if job.in_flight:
                running.add(rid)
        self._running = running

    def forget(self, request_id: str) -> None:
        """The job ended: drop what was kept about it."""
        for table in (self._level, self._entry, self._changes):
            table.pop(request_id, None)
        for seen in (self._admitted, self._running, self._preempted):
            seen.discard(request_id)

    def drain(self) -> list[Event]:
        out, self.pending = self.pending, []
        return out

    def _check_level(self, job: Job, tick: int) -> None:
        rid = job.request_id
        before = self._level.get(rid)
        if before is None:
            self._level[rid] = self._entry[rid] = job.level
            return
        if before == job.level:
            return
        self._level[rid] = job.level
        count = self._changes[rid] = self._changes.get(rid, 0) + 1
        self._emit(
            "info" if count <= MAX_INFO_LEVEL_CHANGES else "debug",
            "job_level", job, tick, from_level=before,
            change="demoted" if job.level > before else "promoted",
        )  # fmt: skip

    def _emit(self, level: LogLevel, event: str, job: Job, tick: int, **fields: object) -> None:
        # "queue_level", not "level": structlog's "level" field is the log level.
        fields = {"request_id": job.request_id, "tick": tick, "queue_level": job.level, **fields}
        self.pending.append((level, event, fields))
