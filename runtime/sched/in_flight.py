"""The ticks the workers are executing, and what each job has in them.

A tick's batch is kept from when it is built until its result (or failure) comes back. A
job's share of the ticks in flight is counted on the job (`ticks_in_flight`,
`tokens_in_flight`, `samples_in_flight`) so the batch builder can see where the job will
stand once they are done (batching.progress). With async scheduling a job may be in two
ticks; if the first one's result ends it, the second one's entry for it is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastserve.runtime.sched.job import Job


@dataclass(slots=True)
class Step:
    """One job's part of a tick in flight."""

    job: Job
    num_tokens: int  # tokens the tick feeds for it
    samples: bool  # whether the tick samples a token for it


class TicksInFlight:
    """Tick number -> its steps, for every tick built and not yet answered."""

    def __init__(self, jobs: Mapping[str, Job]) -> None:
        self._jobs = jobs  # the live jobs (the core's table)
        self._ticks: dict[int, list[Step]] = {}
        self.steps_ahead = 0  # steps built before the job's previous result, total
        self.steps_wasted = 0  # of which the job had ended by the result (dropped), total

    def __len__(self) -> int:
        return len(self._ticks)

    def start(self, job: Job, num_tokens: int, samples: bool) -> Step:
        """The job joins the tick being built."""
        self.steps_ahead += job.in_flight
        job.in_flight = True
        job.ticks_in_flight += 1
        job.tokens_in_flight += num_tokens
        job.samples_in_flight += samples
        return Step(job, num_tokens, samples)

    def launch(self, tick: int, steps: list[Step]) -> None:
        """The tick with these steps went to the workers."""
        self._ticks[tick] = steps

    def land(self, tick: int) -> list[Step]:
        """The tick's result (or failure) came back: its steps of jobs still live, each
        job's in-flight counts lowered (the caller applies the result next)."""
        steps = self._ticks.pop(tick, [])
        live = [s for s in steps if self._jobs.get(s.job.request_id) is s.job]
        self.steps_wasted += len(steps) - len(live)
        for step in live:
            job = step.job
            job.ticks_in_flight -= 1
            job.tokens_in_flight -= step.num_tokens
            job.samples_in_flight -= step.samples
            job.in_flight = job.ticks_in_flight > 0
        return live
