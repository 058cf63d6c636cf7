"""`fastserve serve --tp 2 --pp 2` as a real process tree (4 workers over gloo): greedy
outputs equal the single-worker server's, and a killed worker ends every in-flight request
with an error and brings every process down."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import (
    ServerProcess,
    alive,
    descendants,
    kill_during_streams,
    server_args,
    stream_completion,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
PROMPTS = ["hello world", "the cat", "in the", "a", "there were", "ab cd ef", "xyz", "q"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny") / "model", seed=11)


def started(server: ServerProcess, timeout: float = 120.0) -> ServerProcess:
    """Wait for the supervisor's "serving" line: /health answers before the workers are
    ready, and a tick published before a worker subscribed would be lost."""
    server.wait_ready()
    deadline = time.monotonic() + timeout
    while '"event": "serving"' not in server.logs():  # lines of children may interleave
        assert time.monotonic() < deadline, server.logs()[-3000:]
        time.sleep(0.2)
    return server


async def _all_greedy(url: str, max_tokens: int = 12) -> list[str]:
    async with aiohttp.ClientSession() as s:
        outs = await asyncio.gather(
            *(
                stream_completion(
                    s,
                    url,
                    {"prompt": p, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True},
                )
                for p in PROMPTS
            )
        )
    assert all(f == "length" and e is None for _, f, e in outs), outs
    return [t for t, _, _ in outs]


def test_tp2_pp2_server_matches_single_worker(tiny_dir, tmp_path):
    with started(ServerProcess(server_args(tiny_dir), tmp_path)) as single:
        expected = asyncio.run(_all_greedy(single.url))
    tp2pp2 = ServerProcess(server_args(tiny_dir, "--tp", "2", "--pp", "2"), tmp_path)
    with started(tp2pp2) as server:
        titles = descendants(server.proc.pid).values()
        for r in range(4):
            assert any(f"fastserve-worker-{r}" in t for t in titles), titles
        got = asyncio.run(_all_greedy(server.url))
        assert got == expected
        assert server.stop() == 0


def test_killed_worker_fails_every_request_and_every_process(tiny_dir, tmp_path):
    args = server_args(tiny_dir, "--tp", "2", "--pp", "2", "--max-restarts", "0")
    server = ServerProcess(args, tmp_path)  # restarts off: a failure is final
    with started(server):
        tree = descendants(server.proc.pid)
        victim = next(p for p, t in tree.items() if "fastserve-worker-1" in t)

        body = {"prompt": "x " * 20, "max_tokens": 200, "temperature": 0, "ignore_eos": True}
        results = kill_during_streams(server.url, body, 4, victim)
        # No stream hangs and none completes: each ends with an error.
        assert all(f != "length" and e is not None for _, f, e in results), results
        assert server.proc.wait(60) != 0
        time.sleep(1.0)
        assert not [p for p in tree if alive(p)], "a process outlived the failure"
    assert "actor worker-1" in server.logs()
