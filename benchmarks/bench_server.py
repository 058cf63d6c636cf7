"""Start and stop `fastserve serve` subprocesses for `fastserve bench --compare-policies`.

Each server runs in its own session (process group) on a free loopback port, its output
going to a log file. Stopping sends SIGTERM to the server (its supervisor stops the actor
processes); only if it is still alive after a grace period is its process group killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fastserve.deploy.serve import free_tcp_port
from fastserve.runtime.sched.registry import split_policy_spec


def serve_command(policy: str, port: int, server_args: Sequence[str]) -> list[str]:
    """The `fastserve serve` command line (with this interpreter) for one policy spec
    (`NAME[:KEY=VALUE...]`: the options become --policy-option flags)."""
    name, items = split_policy_spec(policy)
    options = [f"--policy-option={item}" for item in items if item]
    return [
        sys.executable,
        "-m",
        "fastserve.deploy.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        name,
        *options,
        *server_args,
    ]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_server(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM, wait for a clean exit; then SIGKILL the server's own process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this module created for it
            proc.wait(10)


@contextmanager
def running_server(
    policy: str,
    server_args: Sequence[str],
    log_path: Path,
    *,
    threads: int = 0,
    ready_timeout: float = 300.0,
) -> Iterator[str]:
    """A server for `policy`, healthy; yields its URL and stops it on exit."""
    port = free_tcp_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in the worker
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            serve_command(policy, port, server_args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + ready_timeout
            while not _healthy(url):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server for {policy} exited with {proc.returncode}:\n{_tail(log_path)}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server for {policy} not healthy in {ready_timeout} s")
                time.sleep(0.5)
            yield url
        finally:
            stop_server(proc)
