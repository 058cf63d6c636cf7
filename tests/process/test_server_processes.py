"""The real process tree (supervisor, scheduler, cache manager, worker, frontend) over
ZeroMQ, serving a tiny random Llama."""

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, descendants

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny") / "model")


def server_args(model_dir, *extra):
    return [
        "--model",
        str(model_dir),
        "--block-size",
        "4",
        "--num-device-blocks",
        "256",
        "--max-model-len",
        "256",
        *extra,
    ]


async def stream_completion(session, url, body, on_first_chunk=None):
    """Returns (text, finish_reason, error) of a streamed completion."""
    text, finish, error = "", None, None
    async with session.post(url + "/v1/completions", json={**body, "stream": True}) as resp:
        if resp.status != 200:
            return "", None, (await resp.json())["error"]
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                continue
            choice = chunk["choices"][0]
            if on_first_chunk is not None and not text:
                on_first_chunk()
            text += choice["text"]
            finish = choice["finish_reason"] or finish
    return text, finish, error


def kill_during_streams(url, body, n, victim):
    """Start `n` streaming completions, SIGKILL process `victim` once the first token
    arrives, and return each stream's (text, finish_reason, error)."""

    async def scenario():
        started = asyncio.Event()

        async def one(s):
            try:
                return await stream_completion(s, url, body, started.set)
            except aiohttp.ClientError as exc:
                return ("", None, {"message": f"connection closed: {exc}"})

        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.ensure_future(one(s)) for _ in range(n)]
            await asyncio.wait_for(started.wait(), 60)
            os.kill(victim, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    return asyncio.run(scenario())


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
        assert not [p for p in tree if os.path.exists(f"/proc/{p}") and _alive(p)]
    events = server.log_events()
    assert any(e.get("event") == "server_stopped" for e in events)
    # One request's life can be rebuilt across processes from the JSON logs.
    rid = next(e["request_id"] for e in events if e.get("event") == "request_finished")
    actors = {e["actor"] for e in events if e.get("request_id") == rid}
    assert {"frontend", "scheduler"} <= actors


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


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
