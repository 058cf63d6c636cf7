"""`fastserve bench --compare-policies`: one server per policy, the same workload, the
simulation beside it, one table, JSON and a figure."""

import json
import subprocess
import sys

import pytest

from tests.model_fixtures import make_tiny_llama_dir

pytestmark = pytest.mark.timeout(150)


def test_compare_policies_runs_servers_and_simulation(tmp_path) -> None:
    model_dir = make_tiny_llama_dir(tmp_path / "tiny")
    out = tmp_path / "cmp" / "compare.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastserve.deploy.cli",
            "bench",
            "--compare-policies",
            "fcfs,skip-join-mlfq",
            "--model",
            str(model_dir),
            "--block-size",
            "4",
            "--num-device-blocks",
            "40",
            "--num-host-blocks",
            "400",
            "--max-batch-jobs",
            "4",
            "--num-requests",
            "8",
            "--arrivals",
            "poisson",
            "--rates",
            "10,20",
            "--prompt-lengths",
            "lognormal",
            "--mean-prompt",
            "20",
            "--max-prompt",
            "60",
            "--lengths",
            "lognormal",
            "--mean-output",
            "16",
            "--max-output",
            "48",
            "--token-range",
            "3:250",
            "--warmup",
            "1",
            "--server-threads",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert [(r["policy"], r["rate"]) for r in runs] == [
        ("fcfs", 10.0), ("fcfs", 20.0), ("skip-join-mlfq", 10.0), ("skip-join-mlfq", 20.0)
    ]  # fmt: skip
    for run in runs:
        assert run["real"]["num_requests"] == 8 and run["real"]["num_failed"] == 0
        assert run["sim"]["num_requests"] == 8
    # The same workload for every policy: identical prompt and output lengths.
    lengths = {
        tuple((q["prompt_len"], q["expected_output"]) for q in r["real"]["requests"])
        for r in runs
        if r["rate"] == 10.0
    }
    assert len(lengths) == 1
    assert (out.parent / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (out.parent / "logs" / "serve-fcfs.log").exists()
    assert "sim" in report["table"] and "real" in report["table"]
