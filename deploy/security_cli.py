"""Command-line flags for authentication, admission control and draining (`serve`,
`launch`), and `fastserve keygen`.

Kept apart from cli.py so that these flags travel together; cli.py calls in at the end of
its server flags and of its config building.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fastserve.runtime.config import ServerConfig
from fastserve.runtime.curve_keys import CurveKeyError, CurveServerKeys, generate_keypair

API_KEY_ENV = "FASTSERVE_API_KEY"  # one key, or several separated by commas


def add_hardening_args(p: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"require `Authorization: Bearer KEY` on /v1/* (repeatable; also ${API_KEY_ENV})",
    )
    p.add_argument(
        "--metrics-public", action="store_true", help="serve /metrics and /dashboard/data without a key"
    )
    p.add_argument(
        "--zmq-curve-secret",
        default=d.zmq_curve_secret_file,
        metavar="FILE",
        help="CurveZMQ key pair of the ZeroMQ endpoint (a .key_secret from `fastserve keygen`)",
    )
    p.add_argument(
        "--zmq-allowed-clients",
        action="append",
        default=[],
        metavar="DIR|FILE|z85:KEY",
        help="client public keys the ZeroMQ endpoint admits: a directory of .key files, "
        "a .key file or z85:KEY (repeatable)",
    )
    p.add_argument(
        "--max-queued-requests",
        type=int,
        default=d.max_queued_requests,
        help="unfinished requests past which new ones get 429 (0 = unbounded)",
    )
    p.add_argument(
        "--max-queued-tokens",
        type=int,
        default=d.max_queued_tokens,
        help="their prompt + max_tokens, summed, past which new ones get 429 (0 = unbounded)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout_s,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight requests may run before the server exits",
    )


def env_api_keys() -> list[str]:
    return [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]


def apply_hardening_args(cfg: ServerConfig, args: argparse.Namespace) -> None:
    """Copy the flags into `cfg`, refusing combinations that would leave a door open."""
    cfg.api_keys = [*args.api_key, *env_api_keys()]
    cfg.metrics_public = args.metrics_public
    cfg.zmq_curve_secret_file = args.zmq_curve_secret
    cfg.zmq_allowed_clients = list(args.zmq_allowed_clients)
    for name in ("max_queued_requests", "max_queued_tokens", "drain_timeout"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 0")
    cfg.max_queued_requests = args.max_queued_requests
    cfg.max_queued_tokens = args.max_queued_tokens
    cfg.drain_timeout_s = args.drain_timeout
    check_zmq_security(cfg)


def check_zmq_security(cfg: ServerConfig) -> None:
    if cfg.zmq_curve_secret_file or cfg.zmq_allowed_clients:
        if not cfg.zmq_client_address:
            raise SystemExit("--zmq-curve-secret and --zmq-allowed-clients need --zmq-port")
        try:  # load now: a bad key file must stop `serve` before any process starts
            CurveServerKeys.load(cfg.zmq_curve_secret_file, cfg.zmq_allowed_clients)
        except CurveKeyError as exc:
            raise SystemExit(f"--zmq-curve-secret: {exc}") from None
    elif cfg.api_keys and cfg.zmq_client_address:
        # The ZeroMQ endpoint cannot check bearer keys: open, it would bypass them.
        raise SystemExit(
            "--api-key protects HTTP only: with --zmq-port also pass --zmq-curve-secret and "
            "--zmq-allowed-clients (see `fastserve keygen`)"
        )


def _cmd_keygen(args: argparse.Namespace) -> int:
    """Write CurveZMQ key pairs: NAME.key (public) and NAME.key_secret (private)."""
    for name in args.names or ["server", "client"]:
        public, secret = generate_keypair(Path(args.directory), name)
        print(f"{name}: public key {public} (hand it out); key pair {secret} (keep it private)")
    return 0


def register_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", help="where to write NAME.key and NAME.key_secret")
    p.add_argument(
        "--name",
        dest="names",
        action="append",
        help="key pair name (repeatable; default: server and client)",
    )
    p.set_defaults(func=_cmd_keygen)
