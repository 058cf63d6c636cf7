"""Every actor in one event loop over in-memory queues, with a tiny random Llama."""

import asyncio

import pytest

from fastserve.deploy.inprocess import run_inprocess
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.frontend.events import Delta, Failed, Finished
from tests.model_fixtures import make_tiny_llama_dir


def tiny_config(tmp_path, **cache) -> ServerConfig:
    cfg = ServerConfig(model=str(make_tiny_llama_dir(tmp_path / "tiny")), served_model_name="tiny")
    cfg.max_model_len = 256
    cfg.cache.block_size = 4
    cfg.cache.num_device_blocks = cache.get("device", 256)
    cfg.cache.num_host_blocks = cache.get("host", 0)
    cfg.scheduler.max_batch_jobs = cache.get("batch", 8)
    cfg.scheduler.policy = cache.get("policy", "fcfs")
    return cfg


async def generate(service, prompt: str, max_tokens: int):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    handle = await service.submit(service.parse("completion", body))
    tokens, end = [], None
    async for event in handle:
        if isinstance(event, Delta):
            tokens += event.token_ids
        else:
            end = event
    return tokens, end


PROMPTS = [f"prompt number {i} " * (1 + i % 5) for i in range(10)]


async def run_all(cfg, max_tokens=12):
    async with run_inprocess(cfg) as server:
        results = await asyncio.gather(*(generate(server.service, p, max_tokens) for p in PROMPTS))
        await asyncio.sleep(0.05)
        core = server.scheduler.core
        return results, core


@pytest.mark.timeout(120)
async def test_concurrent_requests_finish_and_free_the_pool(tmp_path):
    results, core = await run_all(tiny_config(tmp_path))
    for tokens, end in results:
        assert isinstance(end, Finished) and end.finish_reason == "length"
        assert len(tokens) == 12
    assert not core.jobs and core.device.num_free == core.device.num_blocks


@pytest.mark.timeout(120)
async def test_swapping_under_memory_pressure_gives_identical_greedy_tokens(tmp_path):
    roomy, _ = await run_all(tiny_config(tmp_path), max_tokens=24)
    # 10 jobs of ~15-60 tokens with 4-token blocks need far more than 40 blocks at once.
    tight, core = await run_all(
        tiny_config(tmp_path, device=40, host=400, batch=4, policy="skip-join-mlfq"), max_tokens=24
    )
    assert core.swaps.num_offloads > 0 and core.swaps.num_uploads > 0
    assert core.swaps.num_recomputes == 0
    assert [t for t, _ in tight] == [t for t, _ in roomy]
    assert core.device.num_free == 40 and core.host.num_free == 400


@pytest.mark.timeout(120)
async def test_abort_frees_blocks_and_ends_request(tmp_path):
    cfg = tiny_config(tmp_path)
    async with run_inprocess(cfg) as server:
        service = server.service
        body = {"prompt": "hello " * 10, "max_tokens": 200, "temperature": 0, "ignore_eos": True}
        handle = await service.submit(service.parse("completion", body))
        seen = 0
        async for event in handle:
            if isinstance(event, Delta):
                seen += len(event.token_ids)
                if seen >= 3:
                    await handle.cancel()
            elif isinstance(event, Finished | Failed):
                break
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not server.scheduler.core.jobs:
                break
        core = server.scheduler.core
        assert not core.jobs and core.device.num_free == core.device.num_blocks
