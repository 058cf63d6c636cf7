"""`fastserve bench` / `simulate` workload options: presets, trace slicing, rates, lengths."""

import argparse

import numpy as np
import pytest

from fastserve.benchmarks.workload_build import build_workload
from fastserve.benchmarks.workload_options import PRESETS, add_workload_args, resolve_workload_args

CSV_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.fixture
def trace(tmp_path):
    rows = [f"2023-11-16 18:00:{i:02d}.0000000,{100 * (i + 1)},{10 * (i + 1)}" for i in range(20)]
    path = tmp_path / "trace.csv"
    path.write_text(CSV_HEAD + "\n".join(rows) + "\n")
    return str(path)


def parse(trace: str, *argv: str, num_requests: int | None = None) -> dict:
    p = argparse.ArgumentParser()
    add_workload_args(p, num_requests=num_requests)
    return resolve_workload_args(p.parse_args(["--trace", trace, *argv]))


def test_command_line_beats_preset_beats_base(trace) -> None:
    w = parse(trace, "--preset", "long-prompts", "--max-prompt", "77", num_requests=12)
    assert w["prompt_lengths"] == PRESETS["long-prompts"]["prompt_lengths"]
    assert w["max_prompt"] == 77 and w["num_requests"] == 12
    assert parse(trace, "--num-requests", "3", num_requests=12)["num_requests"] == 3
    with pytest.raises(SystemExit):
        parse(trace, "--num-requests", "0")


def test_trace_rows_are_scaled_capped_and_rate_scaled(trace) -> None:
    w = parse(
        trace, "--num-requests", "5", "--start", "2", "--prompt-scale", "0.5",
        "--output-scale", "2", "--max-output", "90", "--rate-scale", "2", "--max-prompt", "999",
    )  # fmt: skip
    wl = build_workload(w)
    assert [r.arrival for r in wl] == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])
    assert [r.prompt_len for r in wl] == [150, 200, 250, 300, 350]
    assert [r.output_len for r in wl] == [60, 80, 90, 90, 90]
    with pytest.raises(SystemExit):  # more rows than the trace holds
        build_workload(parse(trace, "--num-requests", "30"))


def test_rate_rescales_trace_and_keeps_lengths(trace) -> None:
    w = parse(trace, "--num-requests", "11", "--lengths", "lognormal", "--cv", "2")
    slow, fast = build_workload(w, rate=1.0), build_workload(w, rate=4.0)
    assert slow[-1].arrival == pytest.approx(10.0) and fast[-1].arrival == pytest.approx(2.5)
    assert [r.output_len for r in slow] == [r.output_len for r in fast]


def test_poisson_arrivals_need_a_rate(trace) -> None:
    w = parse(trace, "--arrivals", "poisson", "--num-requests", "2000", "--lengths", "uniform",
              "--prompt-lengths", "fixed", "--mean-prompt", "9", "--mean-output", "10")  # fmt: skip
    with pytest.raises(SystemExit):
        build_workload(w)
    wl = build_workload(w, rate=50.0)
    gaps = np.diff([r.arrival for r in wl])
    assert gaps.mean() == pytest.approx(1 / 50, rel=0.1)
    assert {r.prompt_len for r in wl} == {9}
    assert min(r.output_len for r in wl) == 1 and max(r.output_len for r in wl) == 19


@pytest.mark.parametrize("dist", ["lognormal", "pareto", "bimodal"])
def test_heavy_distributions_are_capped_with_the_asked_mean(trace, dist) -> None:
    w = parse(trace, "--arrivals", "poisson", "--rate", "1", "--num-requests", "20000",
              "--prompt-lengths", "fixed", "--lengths", dist, "--mean-output", "40", "--cv", "2", "--max-output", "100000")  # fmt: skip
    out = np.array([r.output_len for r in build_workload(w)])
    assert out.min() >= 1 and out.mean() == pytest.approx(40, rel=0.15)
    w["max_output"] = 100
    assert max(r.output_len for r in build_workload(w)) <= 100
