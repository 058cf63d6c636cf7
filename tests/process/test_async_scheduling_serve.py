"""`fastserve serve --async-scheduling on` as a real process tree: the scheduler builds the
next tick while the worker runs the current one, the worker feeds its own samples. Greedy
completions (many stopping early on a stop token, so steps built ahead are wasted) equal
those of a server that builds each tick after the previous result."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, server_args, stream_completion

pytestmark = [pytest.mark.timeout(300)]
PROMPTS = [f"prompt {i} " + "ab cd " * (i % 7) for i in range(24)]
STOP_IDS = list(range(3, 265, 19))  # a few tokens of the tiny vocabulary end a completion


async def _complete_all(url: str) -> list[tuple[str, str | None]]:
    async with aiohttp.ClientSession() as s:
        outs = await asyncio.gather(
            *(
                stream_completion(
                    s, url,
                    {"prompt": p, "max_tokens": 24, "temperature": 0,
                     "stop_token_ids": STOP_IDS},
                )  # fmt: skip
                for p in PROMPTS
            )
        )
    assert all(e is None for _, _, e in outs), outs
    return [(t, f) for t, f, _ in outs]


def test_ticks_built_ahead_give_the_same_completions(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "tiny", seed=5)
    results, metrics = {}, {}
    for mode in ("off", "on"):
        args = server_args(model, "--async-scheduling", mode, "--max-batch-jobs", "8")
        with ServerProcess(args, tmp_path) as server:
            results[mode] = asyncio.run(_complete_all(server.url))
            metrics[mode] = server.metrics()
    assert results["on"] == results["off"]
    reasons = [f for _, f in results["off"]]
    assert "stop" in reasons and "length" in reasons
    ahead, wasted = (f"fastserve_scheduler_steps_{k}_total" for k in ("ahead", "wasted"))
    assert metrics["off"][ahead] == 0
    assert metrics["on"][ahead] > 0 and metrics["on"][wasted] > 0
    assert metrics["on"]["fastserve_scheduler_jobs"] == 0
