"""`fastserve serve`: resolve the model, size the pools, start and watch one node."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from fastserve.deploy.supervisor import ChildSpec, ServerFailure, Supervisor
from fastserve.runtime.config import Endpoints, ServerConfig
from fastserve.runtime.logging import configure_logging, get_logger

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_bytes_per_block(
    model_dir: Path, block_size: int, dtype: str, tp: int = 1, pp: int = 1
) -> int:
    """Bytes one KV block takes on one worker (its share of layers and KV heads)."""
    hf = json.loads((model_dir / "config.json").read_text())
    heads = hf["num_attention_heads"]
    kv_heads = hf.get("num_key_value_heads", heads)
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    layers = -(-hf["num_hidden_layers"] // pp)
    kv_heads_per_rank = -(-kv_heads // tp)
    return 2 * layers * kv_heads_per_rank * head_dim * block_size * _DTYPE_BYTES[dtype]


def prepare(cfg: ServerConfig) -> ServerConfig:
    """Fill in what the command line left to defaults: model dir, lengths, pool sizes, sockets."""
    from fastserve.runtime.model.registry import resolve_model_dir, served_model_name
    from fastserve.runtime.sched.registry import canonical_policy_name

    cfg.scheduler.policy = canonical_policy_name(cfg.scheduler.policy)  # fail before spawning
    model_dir = resolve_model_dir(cfg.model or None)
    cfg.model = str(model_dir)
    cfg.served_model_name = cfg.served_model_name or served_model_name(model_dir)
    hf = json.loads((model_dir / "config.json").read_text())
    context = int(hf.get("max_position_embeddings", 2048))
    cfg.max_model_len = min(cfg.max_model_len, context) if cfg.max_model_len else context
    if cfg.cache.num_device_blocks == 0:
        per_block = kv_bytes_per_block(
            model_dir, cfg.cache.block_size, cfg.dtype, cfg.parallel.tp, cfg.parallel.pp
        )
        cfg.cache.num_device_blocks = int(cfg.cache.device_kv_gib * 2**30 // per_block)
    if cfg.device == "auto":
        import torch

        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    if not cfg.endpoints.scheduler_in:
        cfg.endpoints = Endpoints.fresh_ipc()
    if cfg.parallel.tp * cfg.parallel.pp > 1 and cfg.parallel.dist_port == 0:
        cfg.parallel.dist_port = free_tcp_port(cfg.parallel.dist_host)
    return cfg


def free_tcp_port(host: str) -> int:
    """A port free now on `host` (the workers' rendezvous binds it moments later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def node_children(cfg: ServerConfig) -> list[ChildSpec]:
    """Every process of a single-node server."""
    workers = [ChildSpec("worker", r) for r in range(cfg.parallel.tp * cfg.parallel.pp)]
    return [ChildSpec("scheduler"), ChildSpec("cache_manager"), *workers, ChildSpec("frontend")]


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
        device_blocks=cfg.cache.num_device_blocks,
        host_blocks=cfg.cache.num_host_blocks,
        max_model_len=cfg.max_model_len,
    )
    sup = Supervisor(cfg, node_children(cfg))
    try:
        sup.start()
    except ServerFailure as exc:
        log.error("startup_failed", error=str(exc))
        sup.shutdown()
        return 1
    log.info("serving", url=f"http://{cfg.host}:{cfg.port}", model=cfg.served_model_name)
    return sup.watch()
