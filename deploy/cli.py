"""The `fastserve` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from fastserve.deploy.security_cli import add_hardening_args, apply_hardening_args
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.sched.registry import parse_option_items


def add_server_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `launch`."""
    d = ServerConfig()
    p.add_argument(
        "--model", default=None, help="HF Llama-family directory (default: SmolLM2-135M-Instruct)"
    )
    p.add_argument("--served-model-name", default=None, help="name clients pass as `model`")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument(
        "--zmq-port", type=int, default=0, help="ZeroMQ client endpoint port on --host; 0 = off"
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default=d.dtype,
        help="auto: bfloat16 on GPUs and CPUs with native bf16 (AMX, AVX-512 BF16), else float32",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    p.add_argument(
        "--policy",
        default=d.scheduler.policy,
        help="gittins (default) | fcfs | mlfq | skip-join-mlfq | oracle | oracle-output",
    )
    p.add_argument(
        "--policy-option",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="policy knob, e.g. starvation_threshold=5.0 (repeatable)",
    )
    p.add_argument(
        "--max-batch-jobs",
        type=int,
        default=d.scheduler.max_batch_jobs,
        help="most jobs per iteration (0: 16 on CPU, 256 on GPU)",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=d.scheduler.max_batch_tokens,
        help="most tokens per iteration, prefills chunked to fit (0: 512 on CPU, 8192 on GPU)",
    )
    p.add_argument(
        "--max-started-jobs",
        type=int,
        default=d.scheduler.max_started_jobs,
        help="most jobs holding KV half-done (0: 2x --max-batch-jobs; negative: no bound)",
    )
    p.add_argument(
        "--no-prefix-caching",
        dest="prefix_caching",
        action="store_false",
        help="prefill every prompt whole (default: reuse the KV of prompt prefixes seen before)",
    )
    p.add_argument(
        "--async-scheduling",
        choices=("auto", "on", "off"),
        default=d.scheduler.async_scheduling,
        help="build the next tick while the current one runs (auto: with a GPU; measured "
        "slower on CPUs, whose cores the forward takes; always off with --pp > 1)",
    )
    p.add_argument(
        "--max-model-len", type=int, default=d.max_model_len, help="context length; 0 = the model's"
    )
    p.add_argument("--default-max-tokens", type=int, default=d.default_max_tokens)
    p.add_argument("--block-size", type=int, default=d.cache.block_size)
    p.add_argument(
        "--num-device-blocks",
        type=int,
        default=d.cache.num_device_blocks,
        help="device KV pool in blocks; 0 = from --device-kv-gib",
    )
    p.add_argument("--device-kv-gib", type=float, default=d.cache.device_kv_gib)
    p.add_argument(
        "--num-host-blocks",
        type=int,
        default=d.cache.num_host_blocks,
        help="host KV pool for offloading, in blocks (default: a quarter of free host memory, "
        "0.5-16 GiB; 0 disables offloading)",
    )
    p.add_argument("--swap-watermark", type=float, default=d.cache.watermark)
    p.add_argument("--tp", type=int, default=d.parallel.tp)
    p.add_argument("--pp", type=int, default=d.parallel.pp)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--worker-threads",
        type=int,
        default=d.worker_threads,
        help="torch CPU threads per worker (0: all cores, shared by the workers)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning"], default=d.log_level)
    p.add_argument(
        "--no-auto-profile",
        dest="auto_profile",
        action="store_false",
        help="do not profile the engine at the first start (use the built-in cost model)",
    )
    p.add_argument("--ready-timeout", type=float, default=d.ready_timeout_s)
    add_hardening_args(p)  # API keys, CurveZMQ, admission bounds, drain timeout
    p.add_argument(
        "--max-restarts",
        type=int,
        default=d.max_restarts,
        help="engine restarts allowed within --restart-window after a process dies (0: exit)",
    )
    p.add_argument("--restart-window", type=float, default=d.restart_window_s, metavar="S")
    p.add_argument(
        "--restart-backoff",
        type=float,
        default=d.restart_backoff_s,
        metavar="S",
        help="wait before the first restart; doubles per restart in the window (cap 10 s)",
    )


def parse_policy_options(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; VALUE is JSON (numbers, true/false, strings in quotes) or a bare string."""
    try:
        return parse_option_items(items)
    except ValueError as bad:
        raise SystemExit(f"--policy-option: {bad}") from None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    cfg = ServerConfig()
    cfg.model = args.model or ""
    cfg.served_model_name = args.served_model_name or ""
    cfg.host, cfg.port = args.host, args.port
    if args.zmq_port:
        cfg.zmq_client_address = f"tcp://{args.host}:{args.zmq_port}"
    cfg.dtype, cfg.device = args.dtype, args.device
    cfg.max_model_len = args.max_model_len
    cfg.default_max_tokens = args.default_max_tokens
    cfg.seed, cfg.log_level, cfg.ready_timeout_s = args.seed, args.log_level, args.ready_timeout
    cfg.worker_threads = args.worker_threads
    cfg.auto_profile = args.auto_profile
    cfg.scheduler.policy = args.policy
    cfg.scheduler.policy_options = parse_policy_options(args.policy_option)
    cfg.scheduler.max_batch_jobs = args.max_batch_jobs
    cfg.scheduler.max_batch_tokens = args.max_batch_tokens
    cfg.scheduler.max_started_jobs = args.max_started_jobs
    cfg.scheduler.prefix_caching = args.prefix_caching
    cfg.scheduler.async_scheduling = args.async_scheduling
    cfg.cache.block_size = args.block_size
    cfg.cache.num_device_blocks = args.num_device_blocks
    cfg.cache.device_kv_gib = args.device_kv_gib
    cfg.cache.num_host_blocks = args.num_host_blocks
    cfg.cache.watermark = args.swap_watermark
    cfg.parallel.tp, cfg.parallel.pp = args.tp, args.pp
    apply_hardening_args(cfg, args)
    cfg.max_restarts, cfg.restart_window_s = args.max_restarts, args.restart_window
    cfg.restart_backoff_s = args.restart_backoff
    return cfg


def _cmd_serve(args: argparse.Namespace) -> int:
    from fastserve.deploy.serve import serve

    return serve(config_from_args(args))


def build_parser() -> argparse.ArgumentParser:
    """The `fastserve` command line with every subcommand (the README's commands are
    checked against it: tests/unit/test_readme_commands.py)."""
    parser = argparse.ArgumentParser(prog="fastserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a model on this machine")
    add_server_args(serve)
    serve.set_defaults(func=_cmd_serve)
    # Benchmarking and log analysis live in fastserve.benchmarks; serving stays in deploy/.
    from fastserve.benchmarks import bench, profile_cmd, simulate_cmd, trace_cmd
    from fastserve.deploy import launch
    from fastserve.deploy.security_cli import register_keygen

    commands: list[tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = [
        ("profile", "measure prefill and decode times; cache the cost model", profile_cmd.register),
        ("bench", "replay a workload against a server, or compare policies", bench.register),
        ("simulate", "simulate scheduling policies over a workload", simulate_cmd.register),
        ("launch", "start this node's share of a multi-node server", launch.register),
        ("keygen", "write CurveZMQ key pairs for the ZeroMQ endpoint", register_keygen),
        ("trace", "rebuild a request's timeline from the server's logs", trace_cmd.register),
    ]
    for name, help_text, register in commands:
        register(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
