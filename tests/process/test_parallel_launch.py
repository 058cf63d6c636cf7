"""Two "nodes" on one machine: two `fastserve launch` processes (loopback, node ranks 0 and
1, two workers each, tp=2 x pp=2) serve requests through node 0's frontend; a worker of
node 1 that dies fails every in-flight request and makes both launches exit non-zero."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import (
    alive,
    descendants,
    free_port,
    kill_during_streams,
    stream_completion,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
FLAGS = ["--block-size", "4", "--num-device-blocks", "256", "--max-model-len", "256"]


def write_cluster(path: Path, model: Path) -> int:
    names = ["http", "scheduler", "ticks", "heartbeat", "heartbeat_in", "dist"]
    ports = {n: free_port() for n in names}
    lines = [f'model = "{model}"', "tp = 2", "pp = 2", "heartbeat_timeout_s = 5.0", "[ports]"]
    lines += [f"{n} = {p}" for n, p in ports.items()]
    for _ in range(2):
        lines += ["[[nodes]]", 'host = "127.0.0.1"', "workers = 2"]
    path.write_text("\n".join(lines) + "\n")
    return ports["http"]


class Launch:
    def __init__(self, cluster: Path, node: int, log_dir: Path) -> None:
        self.log_path = log_dir / f"launch-{node}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in close)
        cmd = [
            sys.executable,
            "-m",
            "fastserve.deploy.cli",
            "launch",
            "--config",
            str(cluster),
            "--node-rank",
            str(node),
            *FLAGS,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        tree = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in tree:  # never leave orphans behind a failed test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture
def cluster(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "model", seed=11)
    http = write_cluster(tmp_path / "cluster.toml", model)
    nodes = [Launch(tmp_path / "cluster.toml", n, tmp_path) for n in (0, 1)]
    deadline = time.monotonic() + 180
    while '"event": "serving"' not in nodes[0].logs():
        for n in nodes:
            assert n.proc.poll() is None, n.logs()[-3000:]
        assert time.monotonic() < deadline, nodes[0].logs()[-3000:]
        time.sleep(0.3)
    yield f"http://127.0.0.1:{http}", nodes
    for n in nodes:
        n.close()


def _body(prompt: str, max_tokens: int) -> dict:
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


def test_two_nodes_serve_then_stop_cleanly(cluster):
    url, nodes = cluster

    async def scenario():
        async with aiohttp.ClientSession() as s:
            prompts = ["hello world", "the cat", "a", "in the"]
            return await asyncio.gather(*(stream_completion(s, url, _body(p, 10)) for p in prompts))

    outs = asyncio.run(scenario())
    assert all(t and f == "length" and e is None for t, f, e in outs), outs
    titles = [t for n in nodes for t in descendants(n.proc.pid).values()]
    for r in range(4):  # ranks 0-1 on node 0, 2-3 on node 1
        assert sum(f"fastserve-worker-{r}" in t for t in titles) == 1, titles
    nodes[0].proc.send_signal(signal.SIGTERM)
    assert nodes[0].proc.wait(60) == 0
    # Node 1 hears node 0 go silent and stops too (non-zero: it did not choose to).
    assert nodes[1].proc.wait(60) != 0


def test_killed_worker_on_node_1_fails_requests_and_both_launches(cluster):
    url, nodes = cluster
    tree = {p: t for n in nodes for p, t in descendants(n.proc.pid).items()}
    victim = next(p for p, t in tree.items() if "fastserve-worker-3" in t)

    results = kill_during_streams(url, _body("x " * 20, 200), 3, victim)
    assert all(f != "length" and e is not None for _, f, e in results), results
    assert nodes[1].proc.wait(60) != 0
    assert nodes[0].proc.wait(60) != 0
    time.sleep(1.0)
    assert not [p for p in tree if alive(p)], "a process outlived the failure"
    assert "worker-3" in nodes[1].logs()


def test_cluster_file_assigns_ranks_and_rejects_mismatches(tmp_path):
    from fastserve.deploy.cluster import ClusterError, ClusterSpec, node_children, node_config
    from fastserve.runtime.config import ServerConfig

    path = tmp_path / "c.toml"
    write_cluster(path, tmp_path)
    spec = ClusterSpec.load(path)
    assert [list(spec.worker_ranks(n)) for n in (0, 1)] == [[0, 1], [2, 3]]
    assert [c.name for c in node_children(spec, 1)] == ["worker-2", "worker-3"]
    assert {"scheduler", "frontend", "worker-0"} <= {c.name for c in node_children(spec, 0)}
    cfg = node_config(spec, 1, ServerConfig())
    assert cfg.parallel.first_local_rank == 2 and cfg.parallel.tp == 2
    assert cfg.endpoints.ticks.startswith("tcp://127.0.0.1:")
    assert cfg.endpoints.control.startswith("ipc://")  # each node's supervisor is local
    with pytest.raises(ClusterError, match="must match"):
        ClusterSpec.from_dict({"tp": 2, "pp": 2, "nodes": [{"workers": 3}]})
    with pytest.raises(ClusterError, match="unknown"):
        ClusterSpec.from_dict({"tp": 1, "nodes": [{}], "bogus": 1})
