"""The CUDA code paths: pinned host pool, copies on a side stream, the engine on the GPU,
NCCL process groups. Skipped where no GPU is present (CI has none); run them on a GPU
machine with `pytest tests/gpu`.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import torch

from fastserve.deploy.inprocess import run_inprocess
from fastserve.runtime import dist
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.frontend.events import Delta, Finished
from fastserve.runtime.kv.pools import DeviceKVPool, HostKVPool
from fastserve.runtime.kv.spec import KVCacheSpec
from fastserve.runtime.kv.swapper import BlockSwapper
from fastserve.runtime.model.runner import ModelRunner
from fastserve.tests.engine_driver import divergence_report, greedy_generate
from tests.model_fixtures import make_tiny_llama_dir

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_host_pool_is_pinned_and_copies_run_on_a_side_stream():
    spec = KVCacheSpec(4, 2, 16, 8, torch.bfloat16)
    device = DeviceKVPool(spec, 64, "cuda")
    host = HostKVPool(spec, 32)
    assert host.storage.is_pinned()
    swapper = BlockSwapper(device, host)
    assert swapper.on_cuda and swapper._stream is not None
    assert swapper._stream != torch.cuda.current_stream()
    device.storage.copy_(torch.randn(device.storage.shape, device="cuda").to(torch.bfloat16))
    src = [3, 4, 5, 40, 41, 7]
    original = device.storage[src].clone()
    out = swapper.offload(src, [0, 1, 2, 10, 11, 20])
    # Compute queued after the offload runs on the default stream meanwhile.
    a = torch.randn(2048, 2048, device="cuda")
    _ = a @ a
    out.wait()
    assert out.done()
    device.storage.fill_(float("nan"))
    back = swapper.upload([0, 1, 2, 10, 11, 20], [60, 61, 62, 63, 8, 9])
    swapper.fence_uploads({60})  # GPU-side wait: compute after this sees the blocks
    restored = device.storage[[60, 61, 62, 63, 8, 9]].clone()
    back.wait()
    assert torch.equal(restored.view(torch.int16), original.view(torch.int16))
    swapper.close()


def test_engine_on_cuda_gives_the_cpu_engines_greedy_tokens(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "tiny")
    prompts = [[1] + list(range(3 + i, 40 + 7 * i)) for i in range(4)]
    cpu = ModelRunner(model, "float32", "cpu", num_device_blocks=128, block_size=4)
    gpu = ModelRunner(model, "float32", "cuda", num_device_blocks=128, block_size=4)
    assert gpu.device.type == "cuda" and gpu.device_pool.storage.is_cuda
    ref = greedy_generate(cpu, prompts, 24)
    got = greedy_generate(gpu, prompts, 24, shuffle_seed=3)
    for r, g in zip(ref, got, strict=True):
        report = divergence_report(r, g)
        assert report is None, report


def _config(model: str, device_blocks: int, host_blocks: int) -> ServerConfig:
    cfg = ServerConfig(model=model, served_model_name="tiny", device="cuda")
    cfg.max_model_len = 256
    cfg.cache.block_size = 4
    cfg.cache.num_device_blocks = device_blocks
    cfg.cache.num_host_blocks = host_blocks
    cfg.scheduler.max_batch_jobs = 4
    cfg.scheduler.policy = "skip-join-mlfq"
    return cfg


async def _generate_all(cfg: ServerConfig) -> tuple[list[list[int]], tuple[int, int, int]]:
    async def one(service, prompt: str) -> list[int]:
        body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True}
        handle = await service.submit(service.parse("completion", body))
        tokens: list[int] = []
        async for event in handle:
            if isinstance(event, Delta):
                tokens += event.token_ids
            else:
                assert isinstance(event, Finished), event
        return tokens

    prompts = [f"prompt number {i} " * (1 + i % 5) for i in range(10)]
    async with run_inprocess(cfg) as server:
        tokens = await asyncio.gather(*(one(server.service, p) for p in prompts))
        s = server.scheduler.core.swaps
        return list(tokens), (s.num_offloads, s.num_uploads, s.num_recomputes)


@pytest.mark.timeout(300)
async def test_swapping_on_the_gpu_keeps_greedy_tokens(tmp_path):
    model = str(make_tiny_llama_dir(tmp_path / "tiny"))
    roomy, (off, up, _) = await _generate_all(_config(model, 512, 0))
    assert off == up == 0
    tight, (off, up, recompute) = await _generate_all(_config(model, 40, 400))
    assert off > 0 and up > 0 and recompute == 0
    assert tight == roomy


def test_nccl_group_is_chosen_for_cuda_workers():
    device = dist.local_device(torch.device("cuda"), rank=0, first_local_rank=0)
    assert device == torch.device("cuda", 0)
    assert dist.backend_for(device) == "nccl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    layout = dist.RankLayout(1, 1)
    dist.init_process_group(layout, 0, f"tcp://127.0.0.1:{port}", device, 60.0)
    try:
        assert torch.distributed.get_backend() == "nccl"
        x = torch.arange(8.0, device=device)
        torch.distributed.all_reduce(x)
        assert torch.equal(x.cpu(), torch.arange(8.0))
    finally:
        dist.shutdown()
