"""SRPT oracles that read the true output length: benchmark lower bounds, not deployable.

They read `job.true_output_len`, which only a benchmark knows (it forces each length with
`ignore_eos`), to show how far a size-blind policy is from one that knows every job's size.

- `TotalWorkOracle` ("oracle"): shortest remaining *total* work first, the bound policies
  are judged by. Remaining work = the prefill still to do, priced by the cost model, plus
  the decode tokens still to generate times one job's share of a decode step. Where the
  prompt dominates (code completion), ranking by output tokens alone misses most of it.
- `OutputOracle` ("oracle-output"): fewest remaining output tokens first, the classic
  output-length SRPT; kept to show what ignoring the prefill costs.
"""

from __future__ import annotations

from typing import ClassVar

from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.policy import SchedulingPolicy


class _SortedOracle(SchedulingPolicy):
    """Keeps jobs in a list sorted by `remaining(job)`, then arrival, then submission."""

    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._seq: dict[str, int] = {}
        self._next_seq = 0

    def remaining(self, job: Job) -> float:
        raise NotImplementedError

    def add(self, job: Job, now: float) -> None:
        if job.true_output_len is None:
            raise ValueError(f"{self.name} policy needs true_output_len for job {job.request_id}")
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
        self._jobs.sort(key=lambda j: (self.remaining(j), j.arrival, seq[j.request_id]))
        return list(self._jobs)


class OutputOracle(_SortedOracle):
    """Fewest remaining output tokens first; ties by arrival, then by submission order."""

    name: ClassVar[str] = "oracle-output"

    def remaining(self, job: Job) -> float:
        return job.true_output_len - len(job.output_ids)  # type: ignore[operator]


class TotalWorkOracle(_SortedOracle):
    """Least remaining prefill-plus-decode work first, in seconds of the cost model."""

    name: ClassVar[str] = "oracle"

    def __init__(self, cost_model: CostModel, *, unit_batch: int | None = None) -> None:
        """unit_batch: the batch whose per-job decode share prices a token (None: the
        largest batch served so far, as the engine runs it)."""
        super().__init__()
        self.cost_model = cost_model
        self.unit_batch = unit_batch
        self._max_batch = 1
        self._unit = self.decode_token_cost()  # refreshed once per sort

    def decode_token_cost(self) -> float:
        batch = self.unit_batch or self._max_batch
        return self.cost_model.estimate_decode(batch) / batch

    def remaining(self, job: Job) -> float:
        prefill_left = job.prefill_left
        tokens_left = job.true_output_len - len(job.output_ids)  # type: ignore[operator]
        return self.cost_model.estimate_prefill(prefill_left) + tokens_left * self._unit

    def priority_order(self, now: float) -> list[Job]:
        self._unit = self.decode_token_cost()  # one unit for the whole sort
        return super().priority_order(now)

    def on_served(self, served: list[tuple[Job, float]], now: float) -> None:
        super().on_served(served, now)
        self._max_batch = max(self._max_batch, len(served))
