"""Per-tick CPU cost of the scheduler's exchange with the cache manager.

Drives a SchedulerCore (skip-join MLFQ, prefix caching, a device pool short of what the
live jobs need, so the planner offloads and uploads) with N live jobs (a finished one is
replaced at once), answers every tick at once as the workers would, and times in CPU
time of this thread:

- send: building the tick's message for the cache manager and encoding it;
- apply: decoding the cache manager's answer, queueing it, and turning it into the next
  tick's copies (SwapBook.fill);
- cache manager: decoding the message, updating its directory, planning, encoding the
  answer (in its own process in a server, off the scheduler's path);
- schedule: the rest of SchedulerCore.schedule, for scale.

"shared" rows give every prompt the same 64-token head, so jobs hold shared blocks and
the sharing changes as they come and go. Prints a table (with --baseline, the figures of
an earlier run beside these) and writes JSON (--out).

    .venv/bin/python benchmarks/bench_cache_manager.py --jobs 64,512
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from fastserve.benchmarks.bench_report import write_report
from fastserve.protocol.codec import Codec
from fastserve.protocol.common import CopyDirection, SamplingParams
from fastserve.protocol.to_scheduler import SampledToken, StepResult, SubmitRequest, SwapDone
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.kv.cache_directory import CacheDirectory
from fastserve.runtime.kv.swap_planner import ProactiveSwapPlanner
from fastserve.runtime.logging import configure_logging
from fastserve.runtime.sched.batching import BatchLimits
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.mlfq import SkipJoinMLFQ
from fastserve.runtime.sched.scheduler_core import SchedulerCore

COST = CostModel.affine(0.002, 0.0001, 0.015, 0.0005)
BLOCK = 16
SYSTEM = list(range(1000, 1000 + 4 * BLOCK))  # the head every "shared" prompt starts with
FIGURES = ("send_us", "apply_us", "cache_manager_us", "schedule_us")


def make_core(jobs: int, batch: int) -> SchedulerCore:
    # Starvation promotion after 50 ticks: offloaded jobs come back (uploads) within a run.
    policy = SkipJoinMLFQ(COST, starvation_threshold=1.0)
    limits = BatchLimits(batch, 2048, BLOCK, 4096, 2 * batch)
    return SchedulerCore(policy, limits, KVBlockPool(jobs), KVBlockPool(16 * jobs, "host"), (2,))


def submit(core: SchedulerCore, rng: random.Random, i: int, shared: bool, now: float) -> None:
    body = [rng.randrange(3000, 30000) for _ in range(rng.randrange(16, 160))]
    sp = SamplingParams(max_tokens=rng.randrange(20, 400), ignore_eos=True)
    req = SubmitRequest(f"req-{i}", (SYSTEM if shared else []) + body, sp, 0.0)
    assert core.add(req, now) == []


class Timer:
    """Thread CPU time spent inside SwapBook.fill (part of "apply", called by schedule)."""

    def __init__(self, core: SchedulerCore) -> None:
        self.ns = 0
        fill = core.swaps.fill

        def timed(plan: TickPlan) -> None:
            start = time.thread_time_ns()
            fill(plan)
            self.ns += time.thread_time_ns() - start

        core.swaps.fill = timed  # type: ignore[method-assign]


def run(jobs: int, shared: bool, ticks: int, warmup: int, batch: int) -> dict[str, float]:
    rng = random.Random(jobs)
    core = make_core(jobs, batch)
    directory, planner = CacheDirectory(), ProactiveSwapPlanner()
    sched_codec, cm_codec = Codec(), Codec()
    fill = Timer(core)
    for i in range(jobs):
        submit(core, rng, i, shared, 0.0)
    arrivals = jobs
    times: dict[str, list[int]] = {k: [] for k in FIGURES}
    changed = 0
    for tick in range(warmup + ticks):
        now = tick * 0.02
        fill.ns = 0
        t0 = time.thread_time_ns()
        plan = core.schedule(now)
        t1 = time.thread_time_ns()
        frame = sched_codec.encode(core.cache_update())
        t2 = time.thread_time_ns()
        update = cm_codec.decode(frame).message
        directory.apply(update)
        answer = planner.plan(directory)
        reply = cm_codec.encode(answer) if answer.offload or answer.upload else None
        t3 = time.thread_time_ns()
        if reply is not None:
            core.request_swaps(sched_codec.decode(reply).message)
        t4 = time.thread_time_ns()
        if tick >= warmup:
            for key, ns in zip(FIGURES, (t2 - t1, t4 - t3 + fill.ns, t3 - t2, t1 - t0 - fill.ns),
                               strict=True):  # fmt: skip
                times[key].append(ns)
            changed += len(update.changed)
        outs = core.update(StepResult(plan.tick, 0, [SampledToken(s.request_id, 7, -0.1)
                                                     for s in plan.scheduled if s.sample], 0.02),
                           now)  # fmt: skip
        for copies, direction in ((plan.swap_out, CopyDirection.OFFLOAD),
                                  (plan.swap_in, CopyDirection.UPLOAD)):  # fmt: skip
            for c in copies:
                outs += core.swap_done(SwapDone(plan.tick, 0, c.request_id, direction, 0.001))
        for out in outs:
            if out.finish_reason is not None:
                submit(core, rng, arrivals, shared, now)
                arrivals += 1
    row = {k: statistics.mean(v) / 1e3 for k, v in times.items()}
    return row | {
        "offloads": core.swaps.num_offloads,
        "uploads": core.swaps.num_uploads,
        "entries_per_update": changed / ticks,
        "live_jobs": len(core.jobs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="64,512", help="live jobs, comma-separated")
    ap.add_argument("--batch", type=int, default=32, help="most jobs per tick")
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--baseline", default=None, help="JSON of an earlier run to compare with")
    ap.add_argument("--out", default="bench_results/bench_cache_manager.json")
    args = ap.parse_args()
    configure_logging("bench", "warning")  # every copy logs at info
    rows: dict[str, dict[str, float]] = {}
    for jobs in (int(j) for j in args.jobs.split(",")):
        for shared in (False, True):
            name = f"{jobs}{' shared' if shared else ''}"
            rows[name] = run(jobs, shared, args.ticks, args.warmup, args.batch)
    base = json.loads(Path(args.baseline).read_text())["rows"] if args.baseline else {}
    head = "".join(f"{k.removesuffix('_us'):>16}" for k in FIGURES)
    print(f"{'jobs':<12}{head}{'swaps':>8}  (us per tick, CPU)")
    for name, row in rows.items():
        cells = []
        for k in FIGURES:
            before = base.get(name, {}).get(k)
            cells.append(f"{before:>7.1f} ->{row[k]:>6.1f}" if before else f"{row[k]:>16.1f}")
        print(f"{name:<12}{''.join(f'{c:>16}' for c in cells)}"
              f"{row['offloads'] + row['uploads']:>8}")  # fmt: skip
    write_report(args.out, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
