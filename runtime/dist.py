"""torch.distributed set-up for the workers: one process group, TP subgroups per stage.

Global rank r = stage * tp + tp_rank over world = tp * pp. Tensors (all-reduces, vocab
gathers, stage-to-stage activations) go through torch.distributed: NCCL on GPUs, gloo on
CPUs. ZeroMQ never carries tensors.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fastserve.runtime.model.parallel import PPStage, TPGroup


@dataclass(frozen=True)
class RankLayout:
    """Where a global worker rank sits in the tp x pp grid."""

    tp: int
    pp: int

    @property
    def world(self) -> int:
        return self.tp * self.pp

    def stage(self, rank: int) -> int:
        return rank // self.tp

    def tp_rank(self, rank: int) -> int:
        return rank % self.tp

    def reports_tokens(self, rank: int) -> bool:
        """Only (last stage, tp rank 0) sends StepResults; its TP peers sample the same."""
        return self.stage(rank) == self.pp - 1 and self.tp_rank(rank) == 0

    def check(self, rank: int) -> None:
        if self.tp < 1 or self.pp < 1:
            raise ValueError(f"tp={self.tp} and pp={self.pp} must be at least 1")
        if not 0 <= rank < self.world:
            raise ValueError(f"worker rank {rank} outside world of {self.world}")


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(
    layout: RankLayout,
    rank: int,
    init_method: str,
    device: torch.device,
    timeout_s: float,
) -> None:
    """Join the workers' process group (blocks until every rank has joined).

    The timeout bounds every collective and point-to-point wait, so a rank whose peer
    vanished without closing its sockets still fails instead of hanging forever.
    """
    layout.check(rank)
    kwargs = {}
    if device.type == "cuda":
        # Binds NCCL to this rank's GPU up front (and lets NCCL connect eagerly).
        kwargs["device_id"] = device
    dist.init_process_group(
        backend_for(device),
        init_method=init_method,
        rank=rank,
        world_size=layout.world,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )


def parallel_groups(layout: RankLayout, rank: int, num_layers: int) -> tuple[TPGroup, PPStage]:
    """This rank's TP group and pipeline stage. Every rank must call this (it creates the TP
    subgroups of all stages, in the same order everywhere, as new_group requires)."""
    layout.check(rank)
    stage, tp_rank = layout.stage(rank), layout.tp_rank(rank)
    group = None  # the default group when one stage spans the world
    if layout.pp > 1 and layout.tp > 1:
        for s in range(layout.pp):
            g = dist.new_group(list(range(s * layout.tp, (s + 1) * layout.tp)))
            if s == stage:
                group = g
    tp_group = TPGroup(tp_rank, layout.tp, group)
    pp_stage = PPStage.for_rank(stage, layout.pp, num_layers, tp_rank, layout.tp)
    return tp_group, pp_stage


def local_device(device: torch.device, rank: int, first_local_rank: int) -> torch.device:
    """cuda:(index of this worker among this node's workers); the CPU stays the CPU."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", rank - first_local_rank)
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
