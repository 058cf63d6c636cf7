"""The interface every scheduling policy implements, and the FCFS baseline.

A policy only orders jobs: the batch builder (`SchedulerCore`) walks that order and picks
what fits. Policies are pure: no I/O, no clocks of their own (time is passed in).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

from fastserve.runtime.sched.job import Job


class SchedulingPolicy(ABC):
    """Orders unfinished jobs by urgency; learns from the service each job received."""

    name: ClassVar[str]
    # Seconds unserved after which a job counts as starving; policies that promote starving
    # jobs set it, and the core then also lifts a starving job above every priority class.
    starvation_threshold: float = math.inf

    @abstractmethod
    def add(self, job: Job, now: float) -> None:
        """A job arrived (its prompt is known, nothing computed)."""

    @abstractmethod
    def remove(self, job: Job) -> None:
        """A job finished or was aborted; forget it."""

    def on_finished(self, job: Job, reason: str) -> None:
        """Optional: a job ended for `reason` ("stop", "length", an abort reason, "error").

        Called right before `remove(job)`. Policies that learn the length distribution use
        it to tell a finished request from a cut or aborted one; the default ignores it.
        """

    @abstractmethod
    def priority_order(self, now: float) -> list[Job]:
        """Every unfinished job, most urgent first. May promote starving jobs."""

    def on_served(self, served: list[tuple[Job, float]], now: float) -> None:
        """After an iteration: each job that ran with its own service in seconds."""
        for job, seconds in served:
            job.total_service += seconds
            job.level_service += seconds
            job.last_served = now


def request_order(policy: SchedulingPolicy, now: float) -> list[Job]:
    """The policy's order with request priority classes above it (lower first), the order
    the server and the simulator both build batches from. A job the policy would count as
    starving joins the most urgent class present, so the policy's starvation bound also
    holds across classes. Stable: within a class the policy's order stands."""
    order = policy.priority_order(now)
    if all(job.priority == 0 for job in order):
        return order
    top = min(job.priority for job in order)
    limit = now - policy.starvation_threshold

    def cls(job: Job) -> int:
        return top if job.last_served <= limit else job.priority

    return sorted(order, key=cls)


class FCFSPolicy(SchedulingPolicy):
    """First come, first served at iteration level (Orca / vLLM behaviour)."""

    name = "fcfs"

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}  # insertion order = arrival order

    def add(self, job: Job, now: float) -> None:
        self._jobs[job.request_id] = job

    def remove(self, job: Job) -> None:
        self._jobs.pop(job.request_id, None)

    def priority_order(self, now: float) -> list[Job]:
        return list(self._jobs.values())
