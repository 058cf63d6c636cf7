"""A scheduler core with prefix caching and `FakeKV`, a stand-in for every worker that
checks the KV each job reads (the prefix-cache tests' harness).

`FakeKV` replays each tick into a WorkerJobTable, keeps the KV as the token id written at
each (block, slot), copies it between pools as the plans say, and checks that every job
reads its own tokens at every position before the ones it feeds, and never writes a block
another job holds. So a wrong block table, a shared block moved or overwritten, or a job
started at the wrong position fails the test driving it.
"""

from __future__ import annotations

from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import SampledToken, StepResult, SubmitRequest, SwapDone
from fastserve.protocol.to_worker import TickPlan
from fastserve.runtime.kv.allocator import KVBlockPool
from fastserve.runtime.kv.cache_directory import CacheDirectory
from fastserve.runtime.sched.batching import BatchLimits
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.policy import FCFSPolicy
from fastserve.runtime.sched.scheduler_core import SchedulerCore
from fastserve.runtime.worker_state import WorkerJobTable

BS = 4
PROMPT = list(range(10, 20))  # 10 tokens: two full blocks and a partial one
COST = CostModel.affine(0.0, 0.001, 0.010, 0.001)


def make_core(
    blocks=64, host=0, jobs=8, tokens=64, policy=None, caching=True, async_scheduling=False
) -> SchedulerCore:
    return SchedulerCore(policy or FCFSPolicy(), BatchLimits(jobs, tokens, BS, 1024),
                         KVBlockPool(blocks), KVBlockPool(host, "host"), (2,),
                         prefix_caching=caching, async_scheduling=async_scheduling)  # fmt: skip


def submit(core, rid, prompt, max_tokens=4, now=0.0, priority=0):
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    req = SubmitRequest(rid, list(prompt), sp, now, priority=priority)
    assert core.add(req, now) == []


def next_token(rid: str, position: int) -> int:
    """A deterministic 'model': the token depends on the job and its position only."""
    return 100 + (sum(map(ord, rid)) * 7 + position) % 50


class FakeKV:
    """Every rank's KV as token ids (see the module doc)."""

    def __init__(self, core: SchedulerCore) -> None:
        self.core = core
        self.table = WorkerJobTable(feeds_samples=core.async_scheduling)
        self.device: dict[tuple[int, int], int] = {}
        self.host: dict[tuple[int, int], int] = {}
        self.outputs: list = []  # every RequestOutput so far
        self.directory = CacheDirectory()  # what the cache manager would know

    def run(self, plan: TickPlan) -> StepResult:
        for copy in plan.swap_out:
            self._copy(self.device, self.host, copy.src_block_ids, copy.dst_block_ids)
        for copy in plan.swap_in:
            self._copy(self.host, self.device, copy.src_block_ids, copy.dst_block_ids)
        tokens = []
        for entry, sched in zip(self.table.apply(plan), plan.scheduled, strict=True):
            job = self.table.jobs[entry.request_id]
            table = entry.block_table
            for p in range(entry.start_pos):
                assert self.device.get((table[p // BS], p % BS)) == job.token_ids[p], (
                    f"{entry.request_id} reads a wrong token at {p}"
                )
            # A step built ahead for a job that ended meanwhile writes blocks it no longer
            # holds (never cached ones: a read of another job's would then fail above).
            live = entry.request_id in self.core.jobs
            for i, t in enumerate(entry.token_ids):
                p = entry.start_pos + i
                block = table[p // BS]
                assert not live or self.core.device.refcount(block) == 1, (
                    f"write to shared block {block}"
                )
                self.device[(block, p % BS)] = t
            if sched.sample:
                pos = entry.start_pos + len(entry.token_ids)
                tokens.append(SampledToken(entry.request_id, next_token(entry.request_id, pos), 0))
        self.table.record(tokens)
        return StepResult(plan.tick, 0, tokens, 0.01)

    @staticmethod
    def _copy(src_pool, dst_pool, src, dst):
        for s, d in zip(src, dst, strict=True):
            for slot in range(BS):
                if (s, slot) in src_pool:
                    dst_pool[(d, slot)] = src_pool[(s, slot)]

    def tick(self, now=0.0):
        """One tick: schedule, execute, acknowledge copies, apply results; returns the plan."""
        plan = self.core.schedule(now)
        self.finish(plan, now)
        return plan

    def finish(self, plan: TickPlan, now=0.0) -> None:
        """Execute a planned tick, acknowledge its copies and apply its result."""
        result = self.run(plan)
        for c in plan.swap_out:
            self.core.swap_done(SwapDone(plan.tick, 0, c.request_id, "out", 0.0))
        for c in plan.swap_in:
            self.core.swap_done(SwapDone(plan.tick, 0, c.request_id, "in", 0.0))
        self.outputs += self.core.update(result, now)

    def pipelined(self, depth=2, limit=400, now=0.0):
        """Run to the end with up to `depth` ticks in flight, as the scheduler actor does
        with async scheduling: the next tick is built before the oldest one's result."""
        flight: list[TickPlan] = []
        for _ in range(limit):
            while len(flight) < depth and self.core.has_work():
                plan = self.core.schedule(now)
                if not (plan.scheduled or plan.swap_in or plan.swap_out or plan.released):
                    break
                flight.append(plan)
            if not flight:
                assert not self.core.jobs, "jobs left with nothing to run"
                return
            self.finish(flight.pop(0), now)
        raise AssertionError("jobs did not finish")

    def view(self) -> CacheDirectory:
        """The cache manager's directory, brought up to date with the core's changes."""
        self.directory.apply(self.core.cache_update())
        return self.directory

    def run_to_end(self, limit=300):
        for _ in range(limit):
            if not self.core.jobs:
                return
            self.tick()
        raise AssertionError("jobs did not finish")
