"""The CUDA code paths: pinned host pool, copies on a side stream, the engine on the GPU,
NCCL process groups. Skipped where no GPU is present (CI has none); run them on a GPU
machine with `pytest tests/gpu`.
"""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime import dist
from fastserve.runtime.kv.pools import DeviceKVPool, HostKVPool
from fastserve.runtime.kv.spec import KVCacheSpec
from fastserve.runtime.kv.swapper import BlockSwapper
from fastserve.runtime.model.runner import ModelRunner
from tests.engine_driver import divergence_report, greedy_generate
from tests.inprocess_harness import run_all, tiny_config
from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import free_port

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


@pytest.mark.timeout(300)
async def test_swapping_on_the_gpu_keeps_greedy_tokens(tmp_path):
    roomy_cfg = tiny_config(tmp_path)
    tight_cfg = tiny_config(tmp_path, device=40, host=400, batch=4, policy="skip-join-mlfq")
    for cfg in (roomy_cfg, tight_cfg):
        cfg.device = "cuda"  # not "auto": this test must not pass on the CPU path
    roomy, _ = await run_all(roomy_cfg, max_tokens=24)
    tight, core = await run_all(tight_cfg, max_tokens=24)
    assert core.swaps.num_offloads > 0 and core.swaps.num_uploads > 0
    assert core.swaps.num_recomputes == 0
    assert [t for t, _ in tight] == [t for t, _ in roomy]


def test_nccl_group_is_chosen_for_cuda_workers():
    device = dist.local_device(torch.device("cuda"), rank=0, first_local_rank=0)
    assert device == torch.device("cuda", 0)
    assert dist.backend_for(device) == "nccl"
    port = free_port()
    layout = dist.RankLayout(1, 1)
    dist.init_process_group(layout, 0, f"tcp://127.0.0.1:{port}", device, 60.0)
    try:
        assert torch.distributed.get_backend() == "nccl"
        x = torch.arange(8.0, device=device)
        torch.distributed.all_reduce(x)
        assert torch.equal(x.cpu(), torch.arange(8.0))
    finally:
        dist.shutdown()


def test_decode_steps_replay_cuda_graphs_with_the_eager_tokens(tmp_path, monkeypatch):
    """Graphs are chosen on their own on a GPU; their greedy tokens and log-probabilities
    match the eager forward's (FASTSERVE_CUDA_GRAPHS=0) over batches that pad to buckets."""
    model = make_tiny_llama_dir(tmp_path / "tiny")
    prompts = [[1] + list(range(3 + i, 30 + 9 * i)) for i in range(5)]
    graphed = ModelRunner(model, "float32", "cuda", num_device_blocks=256, block_size=4)
    monkeypatch.setenv("FASTSERVE_CUDA_GRAPHS", "0")
    eager = ModelRunner(model, "float32", "cuda", num_device_blocks=256, block_size=4)
    assert graphed.graphs is not None and eager.graphs is None
    for batch in (prompts[:3], prompts):
        ref = greedy_generate(eager, batch, 40, shuffle_seed=2)
        got = greedy_generate(graphed, batch, 40, shuffle_seed=2)
        for r, g in zip(ref, got, strict=True):
            report = divergence_report(r, g, tol=1e-3)
            assert report is None, report
    assert graphed.graphs.num_graphs >= 3  # batch buckets 4 and 8, several block buckets
