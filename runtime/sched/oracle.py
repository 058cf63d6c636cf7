"""Shortest-remaining-output-first with the true output length: a benchmark lower bound.

Not deployable: it reads `job.true_output_len`, which only a benchmark knows. It shows how
far a size-blind policy (MLFQ) is from one that knows every job's size.
"""

from __future__ import annotations

from typing import ClassVar

from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.policy import SchedulingPolicy


class SRPTOracle(SchedulingPolicy):
    """Fewest remaining output tokens first; ties by arrival, then by submission order."""

    name: ClassVar[str] = "oracle"

    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._seq: dict[str, int] = {}
        self._next_seq = 0

    def add(self, job: Job, now: float) -> None:
        if job.true_output_len is None:
            raise ValueError(f"oracle policy needs true_output_len for job {job.request_id}")
        self._seq[job.request_id] = self._next_seq
        self._next_seq += 1
        self._jobs.append(job)

    def remove(self, job: Job) -> None:
        if self._seq.pop(job.request_id, None) is not None:
            self._jobs = [j for j in self._jobs if j.request_id != job.request_id]

    def priority_order(self, now: float) -> list[Job]:
        seq = self._seq
        # Only served jobs change key, and they only move forward, so the list stays nearly
        # sorted between calls and timsort re-sorts it in about linear time.
        self._jobs.sort(
            key=lambda j: (
                j.true_output_len - len(j.output_ids),  # type: ignore[operator]
                j.arrival,
                seq[j.request_id],
            )
        )
        return list(self._jobs)
