"""The real process tree (supervisor, scheduler, cache manager, worker, frontend) over
ZeroMQ, serving a tiny random Llama."""

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import (
    ServerProcess,
    alive,
    descendants,
    server_args,
    stream_completion,
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_process_tree_serves_and_stops_cleanly(tiny_dir, tmp_path):
    with ServerProcess(server_args(tiny_dir), tmp_path) as server:
        titles = descendants(server.proc.pid).values()
        for name in ("scheduler", "cache_manager", "worker-0", "frontend"):
            assert any(f"fastserve-{name}" in t for t in titles), titles

        async def scenario():
            async with aiohttp.ClientSession() as s:
                body = {
                    "prompt": "hello world",
                    "max_tokens": 16,
                    "temperature": 0,
                    "ignore_eos": True,
                }
                async with s.post(server.url + "/v1/completions", json=body) as resp:
                    assert resp.status == 200
                    full = await resp.json()
                assert full["usage"]["completion_tokens"] == 16
                streams = await asyncio.gather(
                    *(stream_completion(s, server.url, body) for _ in range(6))
                )
                # Greedy: every run of the same prompt yields the same text, batched or not.
                assert {t for t, _, _ in streams} == {full["choices"][0]["text"]}
                assert all(f == "length" and e is None for _, f, e in streams)
                async with s.post(
                    server.url + "/v1/completions", json={**body, "model": "nope"}
                ) as resp:
                    assert resp.status == 404

        asyncio.run(scenario())
        tree = descendants(server.proc.pid)
        assert server.stop() == 0
        time.sleep(0.5)
        assert not [p for p in tree if os.path.exists(f"/proc/{p}") and alive(p)]
    events = server.log_events()
    assert any(e.get("event") == "server_stopped" for e in events)
    # One request's life can be rebuilt across processes from the JSON logs.
    rid = next(e["request_id"] for e in events if e.get("event") == "request_finished")
    actors = {e["actor"] for e in events if e.get("request_id") == rid}
    assert {"frontend", "scheduler"} <= actors


def test_dead_worker_fails_requests_and_brings_server_down(tiny_dir, tmp_path):
    # Restarts off: the old contract (tests/process/test_self_healing.py has the new one).
    server = ServerProcess(server_args(tiny_dir, "--max-restarts", "0"), tmp_path)
    with server:
        worker = next(
            p for p, t in descendants(server.proc.pid).items() if "fastserve-worker-0" in t
        )

        async def scenario():
            async with aiohttp.ClientSession() as s:
                body = {
                    "prompt": "x " * 20,
                    "max_tokens": 200,
                    "temperature": 0,
                    "ignore_eos": True,
                }
                kill = lambda: os.kill(worker, signal.SIGKILL)  # noqa: E731
                try:
                    return await asyncio.wait_for(
                        stream_completion(s, server.url, body, on_first_chunk=kill), 30
                    )
                except aiohttp.ClientError as exc:
                    return ("", None, {"message": f"connection closed: {exc}"})

        text, finish, error = asyncio.run(scenario())
        # The stream had started, then ended with an error event instead of hanging.
        assert text and finish != "length" and error is not None
        code = server.proc.wait(30)
        assert code != 0
    assert "actor worker-0" in server.logs() and "exited with code" in server.logs()


def test_bad_model_path_fails_fast_with_a_clear_error(tmp_path):
    server = ServerProcess(["--model", str(tmp_path / "missing")], tmp_path)
    assert server.proc.wait(60) != 0
    assert "does not exist" in server.logs()
    server.stop()
