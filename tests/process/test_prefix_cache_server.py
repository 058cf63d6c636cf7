"""Prefix caching end to end with a tiny random Llama: greedy outputs with caching on equal
those with `--no-prefix-caching`, for repeated prompts and for multi-turn chats that resend
their history, while the cache is hit (metrics); and under memory pressure, shared blocks
and swapping together still give the uncached tokens."""

import asyncio

import aiohttp
import pytest

from fastserve.deploy.inprocess import run_inprocess
from fastserve.runtime.frontend.events import Delta, Finished
from tests.inprocess_harness import tiny_config
from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, server_args

pytestmark = pytest.mark.timeout(300)

SYSTEM = "You are a helpful assistant. Answer briefly."
QUESTIONS = ["Tell me a story about a cat.", "And the dog?", "How are you today?"]
GREEDY = {"temperature": 0, "ignore_eos": True, "max_tokens": 10}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny") / "model")


async def post(session, url, path, body):
    async with session.post(url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def scenario(url: str) -> list[str]:
    """Every answer's text, in a fixed order."""
    texts = []
    async with aiohttp.ClientSession() as s:
        prompt = {"prompt": SYSTEM + " Once upon a time", **GREEDY}
        for _ in range(3):  # one after another: the later ones find the first one's blocks
            texts.append((await post(s, url, "/v1/completions", prompt))["choices"][0]["text"])
        both = await asyncio.gather(*(post(s, url, "/v1/completions", prompt) for _ in range(3)))
        texts += [r["choices"][0]["text"] for r in both]
        for opener in ("Hi.", "Hello there."):  # two chats over one system prompt
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": opener}]
            for question in QUESTIONS:
                reply = await post(s, url, "/v1/chat/completions", {"messages": messages, **GREEDY})
                answer = reply["choices"][0]["message"]["content"]
                texts.append(answer)
                messages += [{"role": "assistant", "content": answer},
                             {"role": "user", "content": question}]  # fmt: skip
    return texts


def serve_and_run(tiny_dir, tmp_path, *extra) -> tuple[list[str], dict[str, float]]:
    args = server_args(tiny_dir, "--max-model-len", "1024", "--no-auto-profile", *extra)
    with ServerProcess(args, tmp_path) as server:
        texts = asyncio.run(scenario(server.url))
        metrics = server.metrics()
        assert server.stop() == 0
    return texts, metrics


def test_greedy_outputs_with_caching_equal_those_without(tiny_dir, tmp_path):
    cached, on = serve_and_run(tiny_dir, tmp_path)
    plain, off = serve_and_run(tiny_dir, tmp_path, "--no-prefix-caching")
    assert cached == plain
    s = "fastserve_scheduler_"
    hit, queried = on[s + "prefix_cache_hit_tokens_total"], on[s + "prefix_cache_queried_tokens_total"]
    assert queried > 0 and hit / queried > 0.3  # the repeats and every later turn hit
    assert on[s + "prefix_cache_hit_rate"] == pytest.approx(hit / queried)
    assert on[s + 'kv_cached_blocks{tier="device"}'] > 0
    assert off[s + "prefix_cache_hit_tokens_total"] == off[s + "prefix_cache_queried_tokens_total"] == 0
    assert off[s + 'kv_cached_blocks{tier="device"}'] == 0


async def generate_all(cfg, prompts, max_tokens=24):
    async def one(service, prompt):
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
        tokens = []
        async for event in await service.submit(service.parse("completion", body)):
            if isinstance(event, Delta):
                tokens += event.token_ids
            else:
                assert isinstance(event, Finished), event
        return tokens

    async with run_inprocess(cfg) as server:
        first = await one(server.service, prompts[0])  # cached before the rest arrive
        rest = await asyncio.gather(*(one(server.service, p) for p in prompts[1:]))
        await asyncio.sleep(0.05)
        return [first, *rest], server.scheduler.core


async def test_shared_blocks_and_swapping_together_keep_greedy_tokens(tmp_path):
    prompts = [SYSTEM + f" Question {i}: " + "why? " * (i % 4) for i in range(10)]
    roomy = tiny_config(tmp_path)
    roomy.scheduler.prefix_caching = False
    plain, _ = await generate_all(roomy, prompts)
    # 10 jobs of ~60-80 tokens in 4-token blocks share a 12-block prefix; 40 blocks cannot
    # hold even the 4 a batch runs once they have grown, whatever the timing: swaps happen.
    tight = tiny_config(tmp_path, device=40, host=600, batch=4, policy="skip-join-mlfq")
    cached, core = await generate_all(tight, prompts)
    assert cached == plain
    assert core.prefix.hit_tokens > 0 and core.swaps.num_offloads > 0
    assert core.swaps.num_recomputes == 0
    assert core.device.num_used == 0 and core.host.num_used == 0
