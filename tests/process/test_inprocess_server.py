"""Every actor in one event loop over in-memory queues, with a tiny random Llama."""

import asyncio

import pytest

from fastserve.deploy.inprocess import run_inprocess
from fastserve.runtime.frontend.events import Delta, Failed, Finished
from tests.inprocess_harness import run_all, tiny_config


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
