"""The cluster file of `fastserve launch`: nodes, model, parallel sizes, ports.

    model = ""                 # model directory; "" = the default model
    tp = 3                     # must divide the model's heads (default model: 9, 3 KV)
    pp = 2
    [ports]                    # all optional; defaults below
    http = 8000                # frontend HTTP on node 0
    scheduler = 29600          # scheduler's PULL (results from every node's workers)
    ticks = 29601              # scheduler's PUB (tick plans to every node's workers)
    heartbeat = 29602          # node 0's launch publishes liveness here ...
    heartbeat_in = 29603       # ... and the other launches report theirs here
    dist = 29604               # torch.distributed rendezvous (worker rank 0, on node 0)
    [[nodes]]
    host = "127.0.0.1"         # address the other nodes reach this node at
    workers = 3                # worker processes (devices) on this node
    [[nodes]]
    host = "127.0.0.1"
    workers = 3

Workers take global ranks in node order (node 0 holds ranks 0..workers-1, and so on);
rank r is (pipeline stage r // tp, tp rank r % tp). Defaults bind loopback only.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastserve.deploy.supervisor import ChildSpec
from fastserve.runtime.config import Endpoints, ServerConfig

_DEFAULT_PORTS = {
    "http": 8000,
    "scheduler": 29600,
    "ticks": 29601,
    "heartbeat": 29602,
    "heartbeat_in": 29603,
    "dist": 29604,
}


class ClusterError(ValueError):
    """The cluster file is malformed or inconsistent."""


@dataclass
class Node:
    host: str = "127.0.0.1"
    workers: int = 1


@dataclass
class ClusterSpec:
    nodes: list[Node]
    model: str = ""
    tp: int = 1
    pp: int = 1
    ports: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_PORTS))
    heartbeat_timeout_s: float = 10.0  # a node silent this long (after start-up) is dead

    @classmethod
    def load(cls, path: str | Path) -> ClusterSpec:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ClusterError(f"cannot read cluster file {path}: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClusterSpec:
        unknown = set(raw) - {"nodes", "model", "tp", "pp", "ports", "heartbeat_timeout_s"}
        if unknown:
            raise ClusterError(f"unknown cluster file keys: {sorted(unknown)}")
        ports = dict(_DEFAULT_PORTS)
        bad_ports = set(raw.get("ports", {})) - set(ports)
        if bad_ports:
            raise ClusterError(f"unknown ports: {sorted(bad_ports)}; known: {sorted(ports)}")
        ports.update({k: int(v) for k, v in raw.get("ports", {}).items()})
        nodes = [
            Node(str(n.get("host", "127.0.0.1")), int(n.get("workers", 1)))
            for n in raw.get("nodes", [])
        ]
        spec = cls(
            nodes,
            str(raw.get("model", "")),
            int(raw.get("tp", 1)),
            int(raw.get("pp", 1)),
            ports,
            float(raw.get("heartbeat_timeout_s", 10.0)),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        if not self.nodes:
            raise ClusterError("the cluster file names no [[nodes]]")
        if self.tp < 1 or self.pp < 1:
            raise ClusterError(f"tp={self.tp} and pp={self.pp} must be at least 1")
        total = sum(n.workers for n in self.nodes)
        if total != self.tp * self.pp:
            raise ClusterError(
                f"nodes run {total} workers but tp * pp = {self.tp * self.pp}; they must match"
            )
        if any(n.workers < 0 for n in self.nodes):
            raise ClusterError("a node cannot run a negative number of workers")

    def first_rank(self, node_rank: int) -> int:
        return sum(n.workers for n in self.nodes[:node_rank])

    def worker_ranks(self, node_rank: int) -> range:
        start = self.first_rank(node_rank)
        return range(start, start + self.nodes[node_rank].workers)

    def tcp(self, port: str) -> str:
        """Address on node 0 (where the scheduler and the launch hub live)."""
        return f"tcp://{self.nodes[0].host}:{self.ports[port]}"


def node_config(spec: ClusterSpec, node_rank: int, base: ServerConfig) -> ServerConfig:
    """The ServerConfig every process of node `node_rank` starts from.

    The cross-node sockets (results in, ticks out) are TCP on node 0; the rest (frontend,
    cache manager, supervisor control) stay node-local ipc.
    """
    if not 0 <= node_rank < len(spec.nodes):
        raise ClusterError(f"node rank {node_rank} outside the {len(spec.nodes)} nodes")
    cfg = dataclasses.replace(base)
    cfg.model = spec.model or base.model
    cfg.parallel = dataclasses.replace(
        base.parallel,
        tp=spec.tp,
        pp=spec.pp,
        dist_host=spec.nodes[0].host,
        dist_port=spec.ports["dist"],
        first_local_rank=spec.first_rank(node_rank),
    )
    if node_rank == 0:
        cfg.port = spec.ports["http"]
    local = Endpoints.fresh_ipc()
    cfg.endpoints = dataclasses.replace(
        local, scheduler_in=spec.tcp("scheduler"), ticks=spec.tcp("ticks")
    )
    return cfg


def node_children(spec: ClusterSpec, node_rank: int) -> list[ChildSpec]:
    """Node 0: scheduler, cache manager, its workers, frontend. Others: their workers."""
    workers = [ChildSpec("worker", r) for r in spec.worker_ranks(node_rank)]
    if node_rank != 0:
        return workers
    return [ChildSpec("scheduler"), ChildSpec("cache_manager"), *workers, ChildSpec("frontend")]
