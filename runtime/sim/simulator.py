"""Iteration-level discrete-event simulation of the scheduler over a cost model.

It drives the same `SchedulingPolicy` objects as the real scheduler; only the engine is
replaced by `CostModel` estimates. One loop step is one iteration:

1. admit requests that have arrived (`policy.add`); if nothing is active, jump to the next
   arrival;
2. `request_order(policy, now)` (priority classes, then the policy's order, as the server
   does); the KV model makes room for the batch the policy wants
   (evict low-priority residents, upload wanted host jobs; `SimKVCache.make_room`);
3. `pick_batch` (runtime/sched/batching.py, the function the real core uses too)
   picks the iteration from the order and the free device blocks;
4. the clock advances by the cost model's iteration time. Swaps either overlap compute
   (`overlap_swaps`, proactive swapping on a copy stream: each direction may move as many
   blocks per iteration as the previous iteration's compute time covers, and a job whose
   upload did not fit waits on the host, skipped by `pick_batch`) or add their time to
   the iteration (reactive swapping). Evictions forced by a memory deadlock always add;
5. every job's own service (`CostModel.service_shares`) goes to `policy.on_served`; a job
   whose tokens are all computed samples one token; jobs reaching their output length
   finish and leave the policy.

A job left out of a batch right after running in the previous one counts one preemption.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.config import solo_batch_tokens
from fastserve.runtime.kv.allocator import blocks_for_tokens
from fastserve.runtime.sched.batching import pick_batch
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.policy import SchedulingPolicy, request_order
from fastserve.runtime.sim.kv_model import SimKVCache
from fastserve.runtime.sim.metrics import RequestRecord, summarize
from fastserve.runtime.sim.workload import Request


@dataclass
class SimResult:
    """What a simulation produced: per-request records, their summary, and engine counters."""

    records: list[RequestRecord]
    summary: dict[str, float]
    num_iterations: int
    busy_time: float  # seconds the engine was running iterations
    end_time: float  # clock when the last request finished
    blocks_swapped: int  # offloaded plus uploaded blocks
    num_recomputes: int  # KV dropped because the host pool was full
    peak_device_blocks: int
    unfinished: int = 0  # requests still running when `max_time` stopped the run
    extra: dict[str, Any] = field(default_factory=dict)  # policy counters etc.


def simulate(
    workload: Sequence[Request],
    policy: SchedulingPolicy,
    cost_model: CostModel,
    max_batch_jobs: int = 32,
    max_batch_tokens: int = 2048,
    num_device_blocks: int = 4096,
    block_size: int = 16,
    *,
    num_host_blocks: int | None = None,
    swap_time_per_block: float = 0.0,
    overlap_swaps: bool = True,
    chunked_prefill: bool = True,
    max_time: float = math.inf,
    max_tokens: int | None = None,
    max_started: int | None = None,
) -> SimResult:
    """Run `workload` through `policy` (a fresh instance) and return the metrics.

    num_host_blocks: host pool size; None gives room for every request's full KV.
    swap_time_per_block: seconds to move one block either way.
    overlap_swaps: swaps hide behind compute, within a per-iteration copy budget, instead
      of adding their time to the iteration.
    max_time: stop the clock there; unfinished requests are counted, not recorded.
    max_tokens: the cap every request asks for (at least its output length); None gives
      each its own output length, which tells a policy reading it the exact length.
    max_started: the batch builder's admission bound (see sched/batching.py).
    """
    requests = sorted(workload, key=lambda r: r.arrival)
    for r in requests:
        if r.prompt_len < 1 or r.output_len < 1:
            raise ValueError(f"request needs prompt_len and output_len >= 1: {r}")
        if blocks_for_tokens(r.prompt_len + r.output_len, block_size) > num_device_blocks:
            raise ValueError(f"request does not fit {num_device_blocks} device blocks: {r}")
    if num_host_blocks is None:
        num_host_blocks = sum(
            blocks_for_tokens(r.prompt_len + r.output_len, block_size) for r in requests
        )
    kv = SimKVCache(num_device_blocks, num_host_blocks, block_size)
    active: dict[str, Job] = {}
    records: list[RequestRecord] = []
    previous: set[str] = set()
    now = requests[0].arrival if requests else 0.0
    next_arrival = 0
    iterations = 0
    busy = 0.0
    blocks_swapped = 0
    last_compute = cost_model.estimate_decode(max_batch_jobs)  # copy budget of the first tick
    limits: dict[str, Any] = dict(
        max_jobs=max_batch_jobs,
        max_tokens=max_batch_tokens,
        block_size=block_size,
        chunked_prefill=chunked_prefill,
        max_started=max_started,
        solo_max_tokens=solo_batch_tokens(max_batch_tokens),  # as the server's core does
    )

    while (next_arrival < len(requests) or active) and now < max_time:
        while next_arrival < len(requests) and requests[next_arrival].arrival <= now:
            r = requests[next_arrival]
            rid = f"r{next_arrival}"
            # Each job ends at its true length (no EOS is sampled); of the policies only the
            # oracle may read true_output_len.
            cap = r.output_len if max_tokens is None else max(max_tokens, r.output_len)
            sampling = SamplingParams(max_tokens=cap, ignore_eos=True)
            job = Job(rid, [0] * r.prompt_len, sampling, r.arrival, true_output_len=r.output_len)
            active[rid] = job
            policy.add(job, now)
            next_arrival += 1
        if not active:
            now = requests[next_arrival].arrival
            continue

        order = request_order(policy, now)
        wanted = pick_batch(order, free_blocks=num_device_blocks, include_offloaded=True, **limits)
        budget = (
            last_compute / swap_time_per_block
            if overlap_swaps and swap_time_per_block > 0
            else math.inf
        )
        kv.make_room(wanted, order, budget, budget)
        hidden = kv.take_moved() if overlap_swaps else 0
        batch = pick_batch(order, free_blocks=kv.device.num_free, **limits)
        while not batch:  # memory deadlock: free the bottom until the top job fits
            if not kv.evict_lowest(order, wanted[0].job if wanted else None):
                raise RuntimeError("simulator stalled: no job can run and nothing to evict")
            kv.make_room(wanted[:1], order)
            batch = pick_batch(order, free_blocks=kv.device.num_free, **limits)
        kv.grow(batch)

        decode_context = sum(e.job.num_computed for e in batch if not e.is_prefill)
        shares = cost_model.service_shares(
            [(e.num_new_tokens, e.is_prefill) for e in batch], decode_context
        )
        compute = sum(shares)
        exposed = kv.take_moved()  # swaps the iteration waits for
        blocks_swapped += hidden + exposed
        step = compute + exposed * swap_time_per_block
        last_compute = compute
        now += step
        busy += step
        iterations += 1

        current: set[str] = set()
        finished: list[Job] = []
        for e in batch:
            job = e.job
            sampled = e.samples
            job.num_computed += e.num_new_tokens
            current.add(job.request_id)
            if sampled:
                job.output_ids.append(0)
                if job.first_token_time is None:
                    job.first_token_time = now
                if len(job.output_ids) >= job.true_output_len:  # type: ignore[operator]
                    finished.append(job)
        for rid in previous - current:
            job = active.get(rid)
            if job is not None:
                job.num_preemptions += 1
        previous = current
        policy.on_served([(e.job, s) for e, s in zip(batch, shares, strict=True)], now)
        for job in finished:
            capped = len(job.output_ids) >= job.sampling.max_tokens
            policy.on_finished(job, "length" if capped else "stop")
            policy.remove(job)
            kv.release(job)
            del active[job.request_id]
            previous.discard(job.request_id)
            records.append(
                RequestRecord(
                    job.request_id,
                    job.arrival,
                    len(job.prompt_ids),
                    len(job.output_ids),
                    job.first_token_time if job.first_token_time is not None else now,
                    now,
                    job.num_preemptions,
                    job.num_swaps,
                )
            )

    extra: dict[str, Any] = {
        "num_offloads": kv.num_offloads,
        "num_uploads": kv.num_uploads,
    }
    for counter in ("num_promotions", "num_demotions"):
        if hasattr(policy, counter):
            extra[counter] = getattr(policy, counter)
    return SimResult(
        records=records,
        summary=summarize(records),
        num_iterations=iterations,
        busy_time=busy,
        end_time=now,
        blocks_swapped=blocks_swapped,
        num_recomputes=kv.num_recomputes,
        peak_device_blocks=kv.peak_device_used,
        unfinished=len(active) + len(requests) - next_arrival,
        extra=extra,
    )


def unloaded_jct(request: Request, cost_model: CostModel, max_batch_tokens: int = 2048) -> float:
    """JCT of `request` alone on an idle engine: its prefill chunks, then one decode step
    per further token (context growing by one each step)."""
    full, rest = divmod(request.prompt_len, max_batch_tokens)
    t = full * cost_model.estimate_prefill(max_batch_tokens) + cost_model.estimate_prefill(rest)
    for i in range(1, request.output_len):
        t += cost_model.estimate_decode(1, request.prompt_len + i)
    return t
