"""`fastserve simulate` and `fastserve profile` end to end, in process and at a tiny size."""

import argparse
import json

import pytest

from fastserve.benchmarks import profile_cmd, simulate_cmd
from fastserve.deploy.cli import main
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.profile_cache import DEFAULT_COST_MODEL
from tests.model_fixtures import make_tiny_llama_dir

COST = CostModel.affine(0.0, 0.0002, 0.02, 0.001)


@pytest.fixture
def cost_json(tmp_path):
    path = tmp_path / "cost.json"
    COST.save(str(path))
    return str(path)


def test_simulate_command_writes_table_json_and_figure(tmp_path, cost_json, capsys) -> None:
    out, fig = tmp_path / "sim.json", tmp_path / "sim.png"
    argv = [
        "simulate", "--arrivals", "poisson", "--rates", "2,4", "--num-requests", "60",
        "--prompt-lengths", "lognormal", "--lengths", "lognormal", "--cost-model", cost_json,
        "--policies", "fcfs,skip-join", "--out", str(out), "--figure", str(fig),
    ]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    report = json.loads(out.read_text())
    assert [(r["policy"], r["rate"]) for r in report["runs"]] == [
        ("fcfs", 2.0), ("skip-join-mlfq", 2.0), ("fcfs", 4.0), ("skip-join-mlfq", 4.0)
    ]  # fmt: skip
    for run in report["runs"]:
        assert run["sim"]["num_requests"] == 60 and run["sim"]["unfinished"] == 0
        assert run["sim"]["jct_mean"] > 0 and len(run["sim"]["jcts"]) == 60
    assert report["cost_model"]["source"] == cost_json
    assert "skip-join-mlfq" in capsys.readouterr().out
    assert fig.read_bytes()[:4] == b"\x89PNG"


def test_calibrated_rate_reaches_the_target_load() -> None:
    p = argparse.ArgumentParser()
    simulate_cmd.register(p)
    args = p.parse_args(["--arrivals", "poisson", "--num-requests", "80", "--rate", "1",
                         "--prompt-lengths", "fixed", "--lengths", "lognormal"])  # fmt: skip
    from fastserve.benchmarks.workload_options import resolve_workload_args

    w = resolve_workload_args(args)
    rate, load = simulate_cmd.calibrate_rate(w, COST, simulate_cmd.engine_kwargs(args), 3.0)
    assert rate > 0 and load >= 3.0
    # A lower target load is reached at a lower rate.
    low = simulate_cmd.calibrate_rate(w, COST, simulate_cmd.engine_kwargs(args), 1.5)[0]
    assert low < rate


def test_cached_cost_model_falls_back_to_the_default(tmp_path, cost_json) -> None:
    model, source = profile_cmd.cached_cost_model(cost_json)
    assert source == cost_json and model.decode_base == COST.decode_base
    missing = str(tmp_path / "no-model")
    assert profile_cmd.cached_cost_model(None, missing)[0] is DEFAULT_COST_MODEL


def test_profile_measures_a_tiny_model(tmp_path, capsys) -> None:
    model_dir = make_tiny_llama_dir(tmp_path / "tiny")
    out = tmp_path / "profile.json"
    p = argparse.ArgumentParser()
    profile_cmd.register(p)
    args = p.parse_args([
        "--model", str(model_dir), "--device", "cpu", "--block-size", "4", "--prefill-sizes",
        "8,32", "--batch-sizes", "1,4", "--context-lens", "8,24", "--repeats", "1",
        "--out", str(out),
    ])  # fmt: skip
    assert args.func(args) == 0
    model = CostModel.load(str(out))
    assert [n for n, _ in model.prefill_knots] == [8, 32]
    assert model.meta["device"] == "cpu" and model.meta["block_size"] == 4
    text = capsys.readouterr().out
    assert "prefill tokens" in text and "decode batch" in text
    # Without --out the profile lands where `fastserve serve` looks for it.
    cfg = profile_cmd.server_config(str(model_dir), "float32", "cpu")
    assert profile_cmd.profile_path(cfg).name.startswith("tiny-")
