"""Does pipeline parallelism keep the pipeline full? Simulated at scale, measured on CPU.

1. Simulation (no GPUs here): a cost model of one decode iteration of a large model on
   8-16 GPUs (weights and KV read from HBM, matmul FLOPs, TP all-reduces over NVLink, the
   stage-to-stage activation send over the network), and a discrete-event run of the
   scheduler's rule: up to `in_flight` ticks with disjoint jobs, a new tick launched as
   soon as the first stage is free. PP=2 with 2 ticks in flight is compared with the same
   two stages run one tick at a time (a single stage's worth of throughput).
2. Real run: a random Llama split over 2 gloo processes (one thread each, so each stage
   costs the same), the same schedule with 1 and with 2 ticks in flight, and the whole
   model in one process. The last stage sends each tick's tokens back to the first, which
   needs them before it can run that group's next decode step (as with the scheduler).

    .venv/bin/python benchmarks/bench_pipeline.py [--ticks 60] [--batch 8] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


@dataclass
class Cluster:
    """A large model on GPUs: per-stage iteration cost from a roofline-style model."""

    name: str
    params_b: float  # parameters, billions
    layers: int
    hidden: int
    tp: int
    pp: int
    hbm_gbs: float = 2000.0  # HBM bandwidth per GPU (A100-80GB ~2 TB/s)
    tflops: float = 150.0  # achieved fp16 TFLOP/s per GPU (half of peak)
    nvlink_gbs: float = 200.0  # all-reduce bus bandwidth inside a node
    net_gbs: float = 25.0  # stage-to-stage network (200 Gb/s InfiniBand)
    latency_us: float = 15.0  # per collective / per send

    def stage_seconds(self, batch: int, context: int = 1024) -> float:
        per_gpu = self.tp * self.pp
        weights = 2 * self.params_b * 1e9 / per_gpu  # fp16 bytes this GPU reads
        kv = batch * context * 2 * (self.layers / self.pp) * (self.hidden / self.tp) * 2
        flops = 2 * self.params_b * 1e9 * batch / per_gpu
        memory_s = (weights + kv) / (self.hbm_gbs * 1e9)
        compute_s = flops / (self.tflops * 1e12)
        act = batch * self.hidden * 2
        allreduce_s = (
            (self.layers / self.pp)
            * 2
            * (self.latency_us * 1e-6 + 2 * act * (self.tp - 1) / self.tp / (self.nvlink_gbs * 1e9))
            if self.tp > 1
            else 0.0
        )
        return max(memory_s, compute_s) + allreduce_s

    def send_seconds(self, batch: int) -> float:
        return self.latency_us * 1e-6 + batch * self.hidden * 2 / (self.net_gbs * 1e9)


def simulate(stage_s: list[float], send_s: float, in_flight: int, ticks: int) -> float:
    """Seconds to run `ticks` ticks through the stages; tick i may start on stage 0 only
    when stage 0 is free and tick i - in_flight has left the last stage (its jobs' tokens
    are back, and at most `in_flight` ticks are out)."""
    free = [0.0] * len(stage_s)
    done: list[float] = []
    for i in range(ticks):
        ready = done[i - in_flight] if i >= in_flight else 0.0
        t = ready
        for s, cost in enumerate(stage_s):
            start = max(t if s == 0 else t + send_s, free[s])
            free[s] = t = start + cost
        done.append(t)
    return done[-1]


def simulated(batch: int, ticks: int) -> list[dict]:
    clusters = [
        Cluster("OPT-66B, 8 GPUs (tp4 x pp2)", 66, 64, 9216, 4, 2),
        Cluster("Llama-2-70B, 16 GPUs (tp8 x pp2)", 70, 80, 8192, 8, 2),
        Cluster("GPT-3 175B, 16 GPUs (tp4 x pp4)", 175, 96, 12288, 4, 4),
    ]
    rows = []
    for c in clusters:
        stage = c.stage_seconds(batch)
        stages, send = [stage] * c.pp, c.send_seconds(batch)
        one = simulate(stages, send, 1, ticks)
        full = simulate(stages, send, c.pp, ticks)
        rows.append(
            {
                "cluster": c.name,
                "stage_ms": round(stage * 1e3, 3),
                "tok_s_one_in_flight": round(ticks * batch / one),
                "tok_s_pp_in_flight": round(ticks * batch / full),
                "speedup": round(one / full, 3),
            }
        )
    return rows


# ---- real CPU run -------------------------------------------------------------------------

MODEL = {
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 64,
}
PROMPT = 16


def _loop(runner, stage: int, pp: int, in_flight: int, batch: int, ticks: int) -> float:
    """Run `ticks` decode ticks over `in_flight` disjoint groups of `batch` jobs; returns
    the seconds of the timed part (after every group's prefill)."""
    from fastserve.protocol.common import SamplingParams
    from fastserve.runtime.model.runner import BatchEntry

    greedy = SamplingParams(temperature=0.0)
    per_job = -(-(PROMPT + ticks + 1) // runner.block_size)
    groups = [
        [
            (f"g{g}j{j}", list(range((g * batch + j) * per_job, (g * batch + j + 1) * per_job)))
            for j in range(batch)
        ]
        for g in range(in_flight)
    ]
    pos = [0] * in_flight
    last = [[5 + j for j in range(batch)] for _ in range(in_flight)]
    first, last_stage = stage == 0, stage == pp - 1
    start = 0.0
    for tick in range(ticks + in_flight):
        if tick == in_flight:
            start = time.perf_counter()  # every group has prefilled
        g = tick % in_flight
        if first and pp > 1 and tick >= in_flight:
            got = torch.empty(batch, dtype=torch.long)
            dist.recv(got, pp - 1)  # tokens of this group's previous tick
            last[g] = got.tolist()
        if pos[g] == 0:
            ids = [list(range(10, 10 + PROMPT)) for _ in range(batch)]
        else:
            ids = [[t] for t in last[g]]
        entries = [
            BatchEntry(rid, tok, pos[g], table, True, greedy)
            for (rid, table), tok in zip(groups[g], ids, strict=True)
        ]
        out = runner.execute(entries)
        pos[g] += len(ids[0])
        if last_stage:
            last[g] = [t.token_id for t in out]
            if pp > 1 and tick + in_flight < ticks + in_flight:
                dist.send(torch.tensor(last[g]), 0)
    runner.pp.wait_sends()
    return time.perf_counter() - start


def _rank(
    rank: int, model: str, store: str, pp: int, in_flight: int, batch: int, ticks: int, out: str
) -> None:
    from fastserve.runtime.model.parallel import PPStage, TPGroup
    from fastserve.runtime.model.runner import ModelRunner

    torch.set_num_threads(1)
    if pp > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=pp)
    pp_stage = PPStage.for_rank(rank, pp, MODEL["num_hidden_layers"], 0, 1)
    blocks = in_flight * batch * (-(-(PROMPT + ticks + 1) // 16)) + 1
    runner = ModelRunner(model, "float32", "cpu", blocks, 16, tp=TPGroup(), pp=pp_stage)
    seconds = _loop(runner, rank, pp, in_flight, batch, ticks)
    if rank == pp - 1:
        Path(out).write_text(json.dumps({"seconds": seconds}))
    if pp > 1:
        dist.barrier()
        dist.destroy_process_group()


def real(batch: int, ticks: int) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
    from tests.model_fixtures import make_tiny_llama_dir

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    model = str(make_tiny_llama_dir(tmp / "model", seed=1, **MODEL))
    rows = []
    for pp, in_flight, label in [
        (1, 1, "whole model, 1 process"),
        (2, 1, "pp=2, 1 tick in flight"),
        (2, 2, "pp=2, 2 ticks in flight"),
    ]:
        out = tmp / f"r{pp}{in_flight}.json"
        store = tmp / f"store{pp}{in_flight}"
        mp.spawn(
            _rank,
            args=(model, str(store), pp, in_flight, batch, ticks, str(out)),
            nprocs=pp,
            join=True,
        )
        sec = json.loads(out.read_text())["seconds"]
        rows.append(
            {"run": label, "seconds": round(sec, 3), "tok_s": round(ticks * batch / sec, 1)}
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ticks", type=int, default=60)
    ap.add_argument("--sim-only", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    report: dict = {
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "simulated": simulated(32, 1000),
    }
    print("simulated decode (batch 32 per tick), PP ticks in flight vs one:")
    for r in report["simulated"]:
        print(
            f"  {r['cluster']:36s} stage {r['stage_ms']:7.3f} ms  "
            f"{r['tok_s_one_in_flight']:8d} -> {r['tok_s_pp_in_flight']:8d} tok/s  "
            f"x{r['speedup']:.2f}"
        )
    if not args.sim_only:
        report["real"] = real(args.batch, args.ticks)
        base = report["real"][1]["tok_s"]
        print(
            f"real CPU run ({os.cpu_count()} cores, 1 thread per stage, load {report['load']:.1f}):"
        )
        for r in report["real"]:
            print(f"  {r['run']:28s} {r['tok_s']:8.1f} tok/s  x{r['tok_s'] / base:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
