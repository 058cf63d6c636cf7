"""Every preset builds from a fresh clone (the trace ships with the package), the new
presets have the shapes they claim, --load prices capacity with the cost model, and the
serving defaults resolve per device and machine."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from fastserve.benchmarks.simulate_cmd import add_engine_args, capacity_rate
from fastserve.benchmarks.workload_build import build_workload
from fastserve.benchmarks.workload_options import (
    BASE,
    DEFAULT_TRACE,
    PRESETS,
    add_workload_args,
    resolve_workload_args,
)
from fastserve.deploy.serve import HOST_POOL_CAP, HOST_POOL_FLOOR, host_pool_bytes
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.sched.cost_model import CostModel

COST = CostModel.affine(0.0, 0.002, 0.050, 0.003)


def test_the_trace_lives_inside_the_package() -> None:
    root = Path(__file__).resolve().parents[2]
    assert Path(DEFAULT_TRACE).is_file()
    assert Path(DEFAULT_TRACE).resolve().is_relative_to(root)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_with_defaults_only(preset) -> None:
    p = argparse.ArgumentParser()
    add_workload_args(p)
    w = resolve_workload_args(p.parse_args(["--preset", preset]))
    requests = build_workload(w, rate=w["rate"] or 2.0)
    assert len(requests) == w["num_requests"]
    assert all(r.prompt_len >= 1 and r.output_len >= 1 for r in requests)


def test_code_preset_is_prompt_heavy_with_short_skewed_outputs() -> None:
    w = {**BASE, **PRESETS["code"], "trace": DEFAULT_TRACE}
    r = build_workload(w)
    prompts = np.array([x.prompt_len for x in r])
    outputs = np.array([x.output_len for x in r])
    assert 170 < prompts.mean() < 250 and prompts.max() <= 750
    assert 18 < outputs.mean() < 30 and np.median(outputs) < 16 and outputs.max() <= 400
    assert outputs.std() / outputs.mean() > 1.3
    assert 10 < r[-1].arrival < 14  # 300 requests at 25 req/s


def test_mixed_preset_has_its_three_components() -> None:
    w = {**BASE, **PRESETS["mixed"], "trace": DEFAULT_TRACE}
    outputs = np.array([x.output_len for x in build_workload(w)])
    long_share = float(np.mean(outputs > 200))
    assert 0.02 < long_share < 0.12  # the 5% long generations (plus a tail of chat)
    assert np.median(outputs) < 60


def test_load_multiple_prices_the_workload_with_the_cost_model() -> None:
    p = argparse.ArgumentParser()
    add_engine_args(p)
    assert p.parse_args(["--load", "3x"]).load == 3.0
    with pytest.raises(SystemExit):
        p.parse_args(["--load", "-1"])
    w = {**BASE, **PRESETS["code"], "trace": DEFAULT_TRACE}
    per_token = COST.estimate_decode(16) / 16
    work = [COST.estimate_prefill(r.prompt_len) + r.output_len * per_token
            for r in build_workload(w, rate=1.0)]  # fmt: skip
    assert capacity_rate(w, COST, 16) == pytest.approx(1 / np.mean(work))


def test_host_pool_is_a_floored_capped_share_of_free_memory() -> None:
    gib = 2**30
    assert host_pool_bytes(1, available=8 * gib) == 2 * gib
    assert host_pool_bytes(4, available=8 * gib) == gib // 2
    assert host_pool_bytes(1, available=gib) == HOST_POOL_FLOOR
    assert host_pool_bytes(1, available=1024 * gib) == HOST_POOL_CAP


def test_serving_defaults_resolve_by_device() -> None:
    d = ServerConfig()
    assert d.scheduler.policy == "gittins" and d.dtype == "auto"
    assert d.cache.num_host_blocks is None  # sized from free memory at start-up
    d.scheduler.resolve_batch_limits("cpu")
    assert (d.scheduler.max_batch_jobs, d.scheduler.max_batch_tokens) == (16, 512)
    assert d.scheduler.started_bound() == 32
    g = ServerConfig().scheduler
    g.max_batch_jobs = 7
    g.resolve_batch_limits("cuda")
    assert (g.max_batch_jobs, g.max_batch_tokens) == (7, 8192)
    g.max_started_jobs = -1
    assert g.started_bound() is None


def test_prepare_fills_dtype_limits_and_a_host_pool(tmp_path) -> None:
    from fastserve.deploy.serve import prepare
    from tests.model_fixtures import make_tiny_llama_dir

    cfg = ServerConfig(model=str(make_tiny_llama_dir(tmp_path / "tiny")))
    cfg = prepare(cfg)
    assert cfg.device == "cpu" and cfg.dtype in ("float32", "bfloat16")
    assert cfg.scheduler.max_batch_jobs == 16 and cfg.cache.num_host_blocks > 0


def test_prepare_sizes_both_pools_by_one_kv_spec(tmp_path) -> None:
    from fastserve.deploy.builders import kv_block_bytes
    from fastserve.deploy.serve import kv_spec, prepare
    from tests.model_fixtures import make_tiny_llama_dir

    model = str(make_tiny_llama_dir(tmp_path / "tiny"))  # 2 layers, 2 kv heads of 16
    cfg = ServerConfig(model=model, dtype="float32", device="cpu")
    cfg.cache.device_kv_gib = 0.01
    cfg = prepare(cfg)
    spec = kv_spec(cfg)
    assert spec.bytes_per_block == 2 * 2 * 2 * 16 * cfg.cache.block_size * 4
    assert cfg.cache.num_device_blocks == int(0.01 * 2**30) // spec.bytes_per_block
    assert kv_block_bytes(cfg) == spec.bytes_per_block
    bad = ServerConfig(model=model, dtype="float32", device="cpu")
    bad.parallel.tp = 3  # 2 kv heads: refused before any process is spawned
    with pytest.raises(ValueError, match="tp=3"):
        prepare(bad)


def test_auto_dtype_follows_native_bf16(monkeypatch) -> None:
    import torch

    from fastserve.runtime.model import device_caps

    monkeypatch.setattr(device_caps, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert device_caps.auto_dtype(torch.device("cpu")) == "float32"
    monkeypatch.setattr(device_caps, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert device_caps.auto_dtype(torch.device("cpu")) == "bfloat16"
    assert device_caps.auto_dtype(torch.device("cuda")) == "bfloat16"
