"""Server configuration: plain dataclasses, serialisable to JSON for child processes."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any

# Default (max_batch_jobs, max_batch_tokens) per device. CPU, from simulations with the
# measured 2-core profile (benchmarks/sim_presets.py, six presets at 1x and 3x load): 16 jobs
# and 512-token chunks gave the lowest mean JCT on every preset (code at 1x: 0.69x that of
# 32 / 2048; a 2048-token chunk stalls every decode for a second on two cores). GPUs batch
# far more per iteration for the same step time.
BATCH_LIMITS: dict[str, tuple[int, int]] = {"cpu": (16, 512), "cuda": (256, 8192)}
# A lone job's prefill may take this many times max_batch_tokens per iteration (nobody waits
# behind it; see sched/batching.py): a 1k-token prompt alone on a CPU is one chunk.
SOLO_CHUNK_FACTOR = 2


def solo_batch_tokens(max_batch_tokens: int) -> int:
    """The token budget of an iteration with one runnable job."""
    return SOLO_CHUNK_FACTOR * max_batch_tokens


@dataclass
class SchedulerConfig:
    """Batch limits and the policy."""

    policy: str = "gittins"  # gittins (default: total work, learned) | fcfs | skip-join-mlfq | ...
    max_batch_jobs: int = 0  # most jobs in one iteration; 0: by device (BATCH_LIMITS)
    max_batch_tokens: int = 0  # most tokens (prefill chunks + decodes) per iteration; 0: by device
    max_started_jobs: int = 0  # most jobs holding KV half-done; 0: 2x max_batch_jobs, <0: no bound
    policy_options: dict[str, Any] = field(default_factory=dict)  # knobs passed to the policy
    prefix_caching: bool = True  # share and keep full KV blocks by content (sched/prefix_cache.py)
    # on: build tick N+1 while tick N runs, workers feeding back their own samples (see
    # sched/scheduler_core.py); off; auto: on with a GPU only (ServerConfig.async_scheduling).
    async_scheduling: str = "auto"

    def resolve_batch_limits(self, device: str) -> None:
        """Fill limits left at 0 with the device's defaults (BATCH_LIMITS)."""
        jobs, tokens = BATCH_LIMITS.get(device, BATCH_LIMITS["cpu"])
        self.max_batch_jobs = self.max_batch_jobs or jobs
        self.max_batch_tokens = self.max_batch_tokens or tokens

    def started_bound(self) -> int | None:
        """The admission bound the batch builder applies (see sched/batching.py)."""
        if self.max_started_jobs < 0:
            return None
        return self.max_started_jobs or 2 * self.max_batch_jobs


@dataclass
class CacheConfig:
    """KV cache pools (same block ids on every rank)."""

    block_size: int = 16  # tokens per block
    num_device_blocks: int = 0  # 0: derive from device_kv_gib
    device_kv_gib: float = 1.0  # device memory for KV when num_device_blocks is 0
    num_host_blocks: int | None = None  # host (offload) pool in blocks; None: from free RAM; 0: off
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
    dtype: str = "auto"  # auto (fastest for the device, device_caps.py) | float32 | bfloat16
    device: str = "auto"  # auto | cpu | cuda
    host: str = "127.0.0.1"  # HTTP bind address
    port: int = 8000  # HTTP port
    zmq_client_address: str = ""  # ZeroMQ client endpoint (tcp://host:port, ipc://...); "" = off
    max_model_len: int = 0  # 0: the model's context length
    default_max_tokens: int = 256  # max_tokens when the client gives none
    seed: int = 0  # worker RNG seed for unseeded sampling
    worker_threads: int = 0  # torch CPU threads per worker; 0 = the cores shared by the workers
    ready_timeout_s: float = 600.0  # how long start-up may take before the server gives up
    log_level: str = "info"  # debug | info | warning
    auto_profile: bool = True  # `serve` profiles the engine once if no cached profile exists
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    endpoints: Endpoints = field(default_factory=Endpoints)
    # -- production hardening (frontend): authentication, admission control, drain --------
    api_keys: list[str] = field(default_factory=list)  # HTTP bearer keys; empty: no auth
    metrics_public: bool = False  # /metrics open even when api_keys are set
    zmq_curve_secret_file: str = ""  # client endpoint's CurveZMQ key pair; "" = no CURVE
    zmq_allowed_clients: list[str] = field(default_factory=list)  # key dirs/files/Z85 keys
    # Unfinished requests (running or queued) past which new ones get a 429. A 2-core CPU
    # server completes a few short requests per second; an unbounded queue at 10x overload
    # grows without end and every accepted request waits longer and longer. 1024 still
    # takes a production burst whole (the code-completion trace sends 300 requests in 12 s,
    # ~3x capacity, and drains), keeps per-request state at a few MB, and refuses fast
    # (kinder than a timeout after minutes) past that.
    max_queued_requests: int = 1024
    # Their prompt + max_tokens, summed: bounds what a few huge requests may pile up
    # (1024 requests of ~1k tokens); one request larger than this alone is still admitted.
    max_queued_tokens: int = 1_048_576
    drain_timeout_s: float = 30.0  # SIGTERM: how long in-flight requests may still run
    # -- production hardening (supervisor): self-healing of the engine processes ---------
    # A dead scheduler, cache manager or worker makes the supervisor restart all three
    # (the frontend and its port stay up), at most max_restarts times in restart_window_s;
    # the wait before restart k (0-based, in the window) is restart_backoff_s * 2**k, capped
    # at restart_backoff_max_s. Past the bound the server exits non-zero. 0 disables.
    max_restarts: int = 5
    restart_window_s: float = 600.0
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 10.0

    def async_scheduling(self) -> bool:
        """Whether ticks are built one ahead: "on", or "auto" on a GPU; never with more than
        one pipeline stage (earlier stages do not sample, so cannot feed their tokens).

        "auto" leaves it off on CPUs, from measurement (2 cores, code preset at 3x load, 300
        requests, 2 interleaved pairs): mean JCT 1.28x and 1.05x, output tokens/s 0.89x and
        1.00x that of building each tick after the last result; one stream's tokens/s 1.016x
        (median of 8 pairs). The forward uses every core, so the scheduler's work moves from
        the idle gap between ticks into the forward's time; a GPU forward leaves the CPU
        free for it."""
        mode = self.scheduler.async_scheduling
        if mode not in ("auto", "on", "off"):
            raise ValueError(f"async_scheduling must be auto, on or off, not {mode!r}")
        wanted = mode == "on" or (mode == "auto" and self.device.startswith("cuda"))
        return wanted and self.parallel.pp == 1

    def max_ticks_in_flight(self) -> int:
        """Ticks the scheduler lets run at once: one per pipeline stage, or two (the one
        running and the one built ahead) with async scheduling."""
        return 2 if self.async_scheduling() else self.parallel.pp

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
