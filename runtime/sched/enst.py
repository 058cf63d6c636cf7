"""Estimated next-scheduled time (ENST) of each job under an MLFQ, for proactive KV swapping.

The cache manager offloads the KV of the jobs with the largest ENST first and uploads the
ones with the smallest first (paper: ENST = min(T_promote, T_execute)).

- T_promote: time left until starvation promotion, threshold - (now - last_served).
- T_execute: the jobs ahead of job i in the priority order must first use up the service
  that keeps them ahead of i. A job j ahead at level l_j keeps its place until it leaves
  level l_i: it has q_{l_j} - s_j left at its own level, then the full quanta of the levels
  between (it joins level l_i at the tail, behind i). Service here is each job's own share
  of an iteration, and the shares of one iteration sum to its duration, so with a full
  batch the wall time to deliver that service is its sum (the paper's (1/B) * sum of quanta
  counts whole iterations per job instead; both say the same thing). Fewer than
  `batch_slots` jobs ahead means i can run in the next iteration: T_execute = 0.

Both are estimates: jobs ahead may finish early (unknown output lengths), and new arrivals
may overtake i. Good enough to rank jobs; not a promise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fastserve.runtime.sched.job import Job


def estimate_next_scheduled(
    order: Sequence[Job],
    quanta: Sequence[float],
    batch_slots: int,
    now: float,
    starvation_threshold: float = math.inf,
) -> dict[str, float]:
    """Map request id -> estimated seconds from `now` until the job is next scheduled.

    `order` is the policy's priority order (job.level and job.level_service set by the
    policy), `quanta` the per-level quanta (the last one nominal), `batch_slots` the most
    jobs in one iteration. O(len(order) * len(quanta)).
    """
    num_levels = len(quanta)
    # prefix_quanta[l] = q_0 + ... + q_{l-1}: full quanta of levels a..b-1 = p[b] - p[a].
    prefix_quanta = [0.0]
    for q in quanta:
        prefix_quanta.append(prefix_quanta[-1] + q)
    remaining_at = [0.0] * num_levels  # sum over jobs ahead at level l of (q_l - s_j)
    count_at = [0] * num_levels  # jobs ahead at level l
    result: dict[str, float] = {}
    for ahead, job in enumerate(order):
        level = min(job.level, num_levels - 1)
        if ahead < batch_slots:
            t_execute = 0.0
        else:
            t_execute = remaining_at[level]
            for lj in range(level):
                # Jobs at lj finish their level, then cross levels lj+1 .. level-1.
                between = prefix_quanta[level] - prefix_quanta[lj + 1]
                t_execute += remaining_at[lj] + count_at[lj] * between
        t_promote = math.inf
        if level > 0 and not math.isinf(starvation_threshold):
            t_promote = max(0.0, starvation_threshold - (now - job.last_served))
        result[job.request_id] = min(t_execute, t_promote)
        remaining_at[level] += max(0.0, quanta[level] - job.level_service)
        count_at[level] += 1
    return result
