"""`fastserve serve`: resolve the model, size the pools, start and watch one node."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastserve.deploy.cluster import ClusterSpec, Node, node_children
from fastserve.deploy.healing import RestartPolicy
from fastserve.deploy.supervisor import ServerFailure, Supervisor
from fastserve.runtime.config import Endpoints, ServerConfig
from fastserve.runtime.logging import configure_logging, get_logger
from fastserve.runtime.model.config import ModelConfig

if TYPE_CHECKING:  # imported where the pools are sized: it imports torch
    from fastserve.runtime.kv.spec import KVCacheSpec


def prepare(cfg: ServerConfig) -> ServerConfig:
    """Fill in what the command line left to defaults: model dir, lengths, pool sizes, sockets."""
    from fastserve.runtime.model.registry import resolve_model_dir, served_model_name
    from fastserve.runtime.sched.registry import canonical_policy_name

    cfg.scheduler.policy = canonical_policy_name(cfg.scheduler.policy)  # fail before spawning
    model_dir = resolve_model_dir(cfg.model or None)
    cfg.model = str(model_dir)
    cfg.served_model_name = cfg.served_model_name or served_model_name(model_dir)
    model = ModelConfig.from_model_dir(model_dir)
    context = model.max_position_embeddings
    cfg.max_model_len = min(cfg.max_model_len, context) if cfg.max_model_len else context
    cfg.device, cfg.dtype = resolve_device_dtype(cfg.device, cfg.dtype)
    cfg.scheduler.resolve_batch_limits(cfg.device)
    spec = kv_spec(cfg, model)  # raises here, before spawning, if tp does not split the heads
    if cfg.cache.num_device_blocks == 0:
        cfg.cache.num_device_blocks = spec.blocks_for_gib(cfg.cache.device_kv_gib)
    if cfg.cache.num_host_blocks is None:
        workers_here = cfg.parallel.tp * cfg.parallel.pp
        cfg.cache.num_host_blocks = spec.blocks_for_bytes(host_pool_bytes(workers_here))
    if not cfg.endpoints.scheduler_in:
        cfg.endpoints = Endpoints.fresh_ipc()
    if cfg.parallel.tp * cfg.parallel.pp > 1 and cfg.parallel.dist_port == 0:
        cfg.parallel.dist_port = free_tcp_port(cfg.parallel.dist_host)
    return cfg


def kv_spec(cfg: ServerConfig, model: ModelConfig | None = None) -> KVCacheSpec:
    """One worker's KV block under `cfg` (its largest rank's share of layers and heads):
    what both pools are sized by, and what the swap-bytes metrics count."""
    from fastserve.runtime.kv.spec import KVCacheSpec
    from fastserve.runtime.model.device_caps import resolve_dtype

    model = model or ModelConfig.from_model_dir(cfg.model)
    par = cfg.parallel
    return KVCacheSpec.for_layout(
        model, cfg.cache.block_size, resolve_dtype(cfg.dtype), par.tp, par.pp
    )


HOST_POOL_SHARE = 0.25  # of the host memory free at start-up, for every worker's host pool
HOST_POOL_FLOOR = 2**29  # bytes per worker: 0.5 GiB, offloading stays on on small machines
HOST_POOL_CAP = 16 * 2**30  # bytes per worker: pinned memory on GPU hosts is not free


def host_pool_bytes(workers: int, available: int | None = None) -> int:
    """Bytes of each worker's host KV pool: a share of free memory, floored and capped."""
    if available is None:
        available = available_memory_bytes()
    share = int(available * HOST_POOL_SHARE) // max(1, workers)
    return min(HOST_POOL_CAP, max(HOST_POOL_FLOOR, share))


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (free plus reclaimable), else free pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """"auto" device and dtype made concrete (profiles and children see real names)."""
    if device == "auto" or dtype == "auto":
        import torch

        from fastserve.runtime.model.device_caps import auto_dtype

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = auto_dtype(torch.device(device))
    return device, dtype


PROFILE_PREFILL_SIZES = (16, 64, 128, 256, 512, 1024)


def ensure_profile(cfg: ServerConfig, log: Any) -> None:
    """Profile the engine once (cached per model, dtype, device) if no profile exists, so
    the default policy prices prefill and decode with this machine's numbers. Runs as a
    child `fastserve profile` with the workers' thread count: about 20 s for SmolLM2-135M
    on 2 CPU cores, then never again. Multi-worker layouts keep the built-in default."""
    from fastserve.deploy.builders import worker_threads
    from fastserve.runtime.sched.profile_cache import profile_path

    path = profile_path(cfg)
    if path.exists() or cfg.parallel.tp * cfg.parallel.pp > 1:
        return
    sizes = [n for n in PROFILE_PREFILL_SIZES if n < cfg.max_model_len] or [cfg.max_model_len // 2]
    contexts = [c for c in (32, 256) if c < cfg.max_model_len // 2] or [1]
    cmd = [
        sys.executable, "-m", "fastserve.deploy.cli", "profile",
        "--model", cfg.model, "--dtype", cfg.dtype, "--device", cfg.device,
        "--block-size", str(cfg.cache.block_size), "--threads", str(worker_threads(cfg)),
        "--prefill-sizes", ",".join(map(str, sizes)),
        "--context-lens", ",".join(map(str, contexts)),
        "--repeats", "2", "--out", str(path),
    ]  # fmt: skip
    log.info("profiling_engine", path=str(path))
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # serving goes on with the built-in cost model
        log.warning("profile_failed", error=done.stderr.strip()[-500:])
    else:
        log.info("profiled_engine", path=str(path))


def free_tcp_port(host: str) -> int:
    """A port free now on `host` (the workers' rendezvous binds it moments later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def fresh_dist_port(cfg: ServerConfig) -> None:
    """Before a restart: a new rendezvous port for the workers' torch.distributed group.
    The killed rank 0's port may linger in TIME_WAIT, and a dying straggler must not be
    able to join the new group."""
    if cfg.parallel.tp * cfg.parallel.pp > 1:
        cfg.parallel.dist_port = free_tcp_port(cfg.parallel.dist_host)


def serve(cfg: ServerConfig) -> int:
    configure_logging("supervisor", cfg.log_level)
    log = get_logger()
    try:
        cfg = prepare(cfg)
    except (ValueError, FileNotFoundError) as exc:
        log.error("invalid_configuration", error=str(exc))
        return 2
    log.info(
        "starting",
        model=cfg.model,
        device=cfg.device,
        dtype=cfg.dtype,
        policy=cfg.scheduler.policy,
        prefix_caching=cfg.scheduler.prefix_caching,
        async_scheduling=cfg.async_scheduling(),
        device_blocks=cfg.cache.num_device_blocks,
        host_blocks=cfg.cache.num_host_blocks,
        max_model_len=cfg.max_model_len,
    )
    if cfg.auto_profile:
        ensure_profile(cfg, log)
    # A single-node server is a one-node cluster: one list of processes for both commands.
    par = cfg.parallel
    children = node_children(ClusterSpec([Node(workers=par.tp * par.pp)], tp=par.tp, pp=par.pp), 0)
    sup = Supervisor(cfg, children, RestartPolicy.from_config(cfg), fresh_dist_port)
    try:
        sup.start()
    except ServerFailure as exc:
        log.error("startup_failed", error=str(exc))
        sup.shutdown()
        return 1
    log.info("serving", url=f"http://{cfg.host}:{cfg.port}", model=cfg.served_model_name)
    return sup.watch()
