"""Self-healing on the real process tree: a SIGKILLed engine process fails the open
streams at once, /health says "restarting" and new requests get 503 meanwhile, then a new
generation of the engine serves again on the same port with nobody's help; past
--max-restarts the server exits non-zero."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, descendants, server_args, stream_completion

pytestmark = pytest.mark.timeout(300)
GREEDY = {"prompt": "hello world", "max_tokens": 16, "temperature": 0, "ignore_eos": True}
# Long enough (thousands of tokens) that no stream can finish before the kill lands, even
# with the tiny model decoding in well under a millisecond a token.
LONG = {"prompt": "x " * 20, "max_tokens": 4000, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(
        tmp_path_factory.mktemp("tiny") / "model", max_position_embeddings=4096
    )


def pid_of(server: ServerProcess, name: str) -> int:
    return next(p for p, t in descendants(server.proc.pid).items() if f"fastserve-{name}" in t)


async def health(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url + "/health") as resp:
        return resp.status, (await resp.json())["status"]


async def wait_healthy(session: aiohttp.ClientSession, url: str, timeout: float) -> float:
    """Poll /health until 200; the monotonic time it first answered so."""
    deadline = time.monotonic() + timeout
    while (await health(session, url))[0] != 200:
        assert time.monotonic() < deadline, "the server did not heal in time"
        await asyncio.sleep(0.05)
    return time.monotonic()


async def complete(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict]:
    async with session.post(url + "/v1/completions", json=body) as resp:
        return resp.status, await resp.json()


def test_killed_worker_mid_stream_heals(tiny_dir, tmp_path):
    # Room for three 4k-token streams (the harness's defaults hold 1k tokens).
    room = ["--max-model-len", "4096", "--num-device-blocks", "4096"]
    with ServerProcess(server_args(tiny_dir, "--no-auto-profile", *room), tmp_path) as server:
        frontend, worker = pid_of(server, "frontend"), pid_of(server, "worker-0")

        async def scenario() -> dict:
            out: dict = {}
            async with aiohttp.ClientSession() as s:
                status, before = await complete(s, server.url, GREEDY)
                assert status == 200
                started = asyncio.Event()

                async def one() -> tuple[tuple, float]:
                    try:
                        result = await stream_completion(s, server.url, LONG, started.set)
                    except aiohttp.ClientError as exc:
                        result = ("", None, {"message": f"connection closed: {exc}"})
                    return result, time.monotonic()

                streams = [asyncio.create_task(one()) for _ in range(3)]
                await asyncio.wait_for(started.wait(), 60)
                os.kill(worker, signal.SIGKILL)
                killed = time.monotonic()
                ends = await asyncio.wait_for(asyncio.gather(*streams), 30)
                out["health"] = await health(s, server.url)
                out["refused"] = await complete(s, server.url, GREEDY)
                healthy = await wait_healthy(s, server.url, 120)
                status, after = await complete(s, server.url, GREEDY)
                out["served_again_s"] = time.monotonic() - killed
                out["healthy_s"] = healthy - killed
                out["ends"] = [(r, end - killed) for r, end in ends]
                out["same"] = status == 200 and after["choices"] == before["choices"]
            return out

        out = asyncio.run(scenario())
        # Every stream had started and then ended with an error, fast, instead of hanging.
        for (text, finish, error), took in out["ends"]:
            assert error is not None and finish != "length", (text, finish, error)
            assert took < 2.0, f"a stream took {took:.2f}s to fail"
        assert out["health"] == (503, "restarting")
        status, body = out["refused"]
        assert status == 503 and body["error"]["code"] == "engine_restarting"
        assert out["same"], "the new engine's greedy output differs"
        # The frontend (and its port) survived; the engine is a new generation.
        assert pid_of(server, "frontend") == frontend and pid_of(server, "worker-0") != worker
        assert server.metrics()["fastserve_frontend_engine_restarts_total"] == 1
        print(f"\nkilled worker -> /health 200: {out['healthy_s']:.2f}s, "
              f"-> a request served: {out['served_again_s']:.2f}s")  # fmt: skip
        assert server.stop() == 0
    events = [e.get("event") for e in server.log_events()]
    assert "engine_restarting" in events and "engine_restarted" in events


def test_restarts_are_bounded_then_the_server_exits_non_zero(tiny_dir, tmp_path):
    args = ["--no-auto-profile", "--max-restarts", "1", "--restart-backoff", "0.1"]
    with ServerProcess(server_args(tiny_dir, *args), tmp_path) as server:
        scheduler = pid_of(server, "scheduler")
        os.kill(scheduler, signal.SIGKILL)

        async def heal() -> int:
            async with aiohttp.ClientSession() as s:
                deadline = time.monotonic() + 10
                while (await health(s, server.url))[0] == 200:  # until it noticed
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                await wait_healthy(s, server.url, 120)
                return (await complete(s, server.url, GREEDY))[0]

        assert asyncio.run(heal()) == 200
        assert pid_of(server, "scheduler") != scheduler
        os.kill(pid_of(server, "cache_manager"), signal.SIGKILL)  # the second: one too many
        code = server.proc.wait(60)
    assert code != 0
    events = server.log_events()
    exhausted = [e for e in events if e.get("event") == "restarts_exhausted"]
    assert exhausted and "cache_manager" in exhausted[0]["error"]
