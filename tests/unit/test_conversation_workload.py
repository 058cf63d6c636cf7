"""The multi-turn preset: shared system prompts, turns that resend the conversation so far,
the same ids wherever the same content appears, and a replay that sends a turn only once
the previous answer is in."""

import argparse
import asyncio
import json

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

from fastserve.benchmarks.loadgen import replay
from fastserve.benchmarks.workload_build import build_workload
from fastserve.benchmarks.workload_options import add_workload_args, resolve_workload_args
from fastserve.runtime.sim.conversations import prompt_token_ids
from fastserve.runtime.sim.workload import Request
from tests.fake_openai import fake_openai_app


def preset(*argv: str) -> list[Request]:
    p = argparse.ArgumentParser()
    add_workload_args(p)
    return build_workload(resolve_workload_args(p.parse_args(["--preset", "multi-turn", *argv])))


def test_each_turn_resends_its_conversation_and_waits_for_the_previous_answer():
    work = preset("--num-requests", "60")
    assert len(work) == 60
    firsts = [r for r in work if r.after < 0]
    assert 60 / 6 <= len(firsts) <= 60 / 2 + 1  # 2-6 turns per conversation (last may be cut)
    systems = {r.segments[0] for r in work}
    assert len(systems) <= 4 and all(length == 160 for _, length in systems)
    for i, r in enumerate(work):
        assert r.prompt_len == sum(length for _, length in r.segments)
        if r.after < 0:
            assert len(r.segments) == 2  # the system prompt and the first question
            continue
        prev = work[r.after]
        assert r.after == i - 1 and r.arrival >= prev.arrival + 1.0
        # The previous prompt, then its answer (as long as that answer), then a question.
        assert r.segments[: len(prev.segments)] == prev.segments
        assert r.segments[len(prev.segments)][1] == prev.output_len
        assert len(r.segments) == len(prev.segments) + 2


def test_equal_content_keys_are_equal_ids_and_plain_requests_draw_as_before():
    work = preset("--num-requests", "30")
    ids = prompt_token_ids(work, np.random.default_rng(0), (100, 10_000), False, seed=3)
    for i, r in enumerate(work):
        assert len(ids[i]) == r.prompt_len and all(100 <= t < 10_000 for t in ids[i])
        if r.after >= 0:
            assert ids[i][: len(ids[r.after])] == ids[r.after]
    same_system = [i for i, r in enumerate(work) if r.segments[0] == work[0].segments[0]]
    assert len({tuple(ids[i][:160]) for i in same_system}) == 1
    other = [i for i, r in enumerate(work) if r.segments[0] != work[0].segments[0]]
    assert all(ids[i][:160] != ids[0][:160] for i in other)
    # Without segments: the replay's old draws, request by request, from the same stream.
    plain = [Request(0.0, 5, 1), Request(0.0, 3, 1)]
    rng = np.random.default_rng(1)
    expected = [rng.integers(100, 200, size=5).tolist(), rng.integers(100, 200, size=3).tolist()]
    assert prompt_token_ids(plain, np.random.default_rng(1), (100, 200), False) == expected


async def test_replay_sends_a_turn_only_after_the_previous_answer():
    log: list[tuple[str, int]] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        log.append(("start", len(body["prompt"])))
        resp = web.StreamResponse()
        await resp.prepare(request)
        await asyncio.sleep(0.2)  # the answer takes longer than the turns' spacing
        choice = {"index": 0, "text": "x", "logprobs": {"tokens": ["x"]}, "finish_reason": "length"}
        await resp.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        log.append(("end", len(body["prompt"])))
        return resp

    server = TestServer(fake_openai_app(completions), host="127.0.0.1")
    await server.start_server()
    try:
        work = [
            Request(0.0, 3, 1, segments=((0, 2), (1, 1))),
            Request(0.01, 6, 1, segments=((0, 2), (1, 1), (2, 1), (3, 2)), after=0),
        ]
        results, _, _ = await replay(f"http://127.0.0.1:{server.port}", work, warmup=0,
                                     progress=False)  # fmt: skip
        assert all(r.ok for r in results)
        assert log == [("start", 3), ("end", 3), ("start", 6), ("end", 6)]
    finally:
        await server.close()
