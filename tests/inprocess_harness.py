"""Every actor in one event loop (`deploy.inprocess`) with a tiny random Llama: the config
and a driver that runs a batch of greedy completions, for the in-process and GPU tests."""

from __future__ import annotations

import asyncio

from fastserve.deploy.inprocess import run_inprocess
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.frontend.events import Delta
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
