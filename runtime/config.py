"""Server configuration: plain dataclasses, serialisable to JSON for child processes."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SchedulerConfig:
    """Batch limits and the policy."""

    policy: str = "fcfs"  # fcfs | mlfq | skip-join-mlfq | oracle | ...
    max_batch_jobs: int = 32  # most jobs in one iteration
    max_batch_tokens: int = 2048  # most tokens (prefill chunks + decodes) in one iteration
    policy_options: dict[str, Any] = field(default_factory=dict)  # knobs passed to the policy


@dataclass
class CacheConfig:
    """KV cache pools (same block ids on every rank)."""

    block_size: int = 16  # tokens per block
    num_device_blocks: int = 0  # 0: derive from device_kv_gib
    device_kv_gib: float = 1.0  # device memory for KV when num_device_blocks is 0
    num_host_blocks: int = 0  # host (offload) pool size in blocks; 0 disables offloading
    watermark: float = 0.1  # keep this fraction of device blocks free by offloading early
    lookahead_ticks: int = 2  # upload jobs that would run within this many ticks


@dataclass
class ParallelConfig:
    """Tensor and pipeline parallel sizes."""

    tp: int = 1  # tensor-parallel ranks per stage
    pp: int = 1  # pipeline stages
    dist_host: str = "127.0.0.1"  # torch.distributed rendezvous (worker rank 0's host)
    dist_port: int = 0  # rendezvous port; 0: `serve` picks a free one per run
    dist_timeout_s: float = 120.0  # bound on any collective / activation wait (dead peers)
    first_local_rank: int = 0  # global rank of this node's first worker (cuda:rank-this)


@dataclass
class Endpoints:
    """ZeroMQ addresses of one run; unique per run so two servers never cross."""

    scheduler_in: str = ""  # PULL bound by the scheduler
    ticks: str = ""  # PUB bound by the scheduler
    frontend_in: str = ""  # PULL bound by the frontend
    cache_in: str = ""  # PULL bound by the cache manager
    control: str = ""  # PULL bound by the supervisor (readiness, failures)

    @classmethod
    def fresh_ipc(cls) -> Endpoints:
        """ipc:// sockets in a new private directory."""
        base = tempfile.mkdtemp(prefix=f"fastserve-{uuid.uuid4().hex[:8]}-")
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: f"ipc://{os.path.join(base, n)}.sock" for n in names})


@dataclass
class ServerConfig:
    """Everything a process of the server needs to start."""

    model: str = ""  # resolved model directory
    served_model_name: str = "SmolLM2-135M-Instruct"  # name clients use in "model"
    dtype: str = "float32"  # float32 | bfloat16
    device: str = "auto"  # auto | cpu | cuda
    host: str = "127.0.0.1"  # HTTP bind address
    port: int = 8000  # HTTP port
    zmq_client_address: str = ""  # ZeroMQ client endpoint (tcp://host:port, ipc://...); "" = off
    max_model_len: int = 0  # 0: the model's context length
    default_max_tokens: int = 256  # max_tokens when the client gives none
    seed: int = 0  # worker RNG seed for unseeded sampling
    worker_threads: int = 0  # torch CPU threads per worker; 0 = all cores but one per worker
    ready_timeout_s: float = 600.0  # how long start-up may take before the server gives up
    log_level: str = "info"  # debug | info | warning
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    endpoints: Endpoints = field(default_factory=Endpoints)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        raw = json.loads(text)
        return cls(
            **{k: v for k, v in raw.items() if k not in _NESTED},
            **{k: _NESTED[k](**raw[k]) for k in _NESTED if k in raw},
        )


_NESTED: dict[str, type] = {
    "scheduler": SchedulerConfig,
    "cache": CacheConfig,
    "parallel": ParallelConfig,
    "endpoints": Endpoints,
}
