"""Reports of `fastserve bench` / `simulate`: summaries, the comparison table, figures."""

import pytest

from fastserve.benchmarks.bench_report import (
    compact_runs,
    comparison_table,
    real_summary,
    single_table,
    write_figure,
)
from fastserve.benchmarks.loadgen import RequestResult


def result(i, arrival, first, finish, n, expected=None, error=None):
    r = RequestResult(i, 10, expected or n, arrival, arrival, first, finish, n, n, "length", error)
    return r


def test_real_summary_counts_only_exact_requests_and_adds_server_counters() -> None:
    results = [
        result(0, 0.0, 0.5, 2.0, 4),
        result(1, 1.0, 1.5, 3.0, 4),
        result(2, 1.0, 1.5, 3.0, 3, expected=4),  # short: excluded and counted
        result(3, 2.0, None, None, 0, expected=4, error="HTTP 500"),
    ]
    counters = {
        "preemptions": 2.0,
        "offloads": 1.0,
        "uploads": 1.0,
        "recomputes": 0.0,
        "swaps": 2.0,
    }
    s = real_summary(results, counters, elapsed=3.5)
    assert s["num_requests"] == 2 and s["num_sent"] == 4 and s["num_failed"] == 2
    assert s["num_wrong_length"] == 1
    assert s["jct_mean"] == pytest.approx(2.0) and s["ttft_mean"] == pytest.approx(0.5)
    assert s["preemptions"] == 2 and s["swaps"] == 2 and s["elapsed_s"] == 3.5
    assert s["jcts"] == [2.0, 2.0]
    text = single_table(s)
    assert "JCT (s)" in text and "preemptions" in text


def side(jct, p99, norm):
    return {"jct_mean": jct, "jct_p99": p99, "norm_latency_mean": norm, "swaps": 3, "jcts": [jct]}


RUNS = [
    {"policy": "fcfs", "rate": 1.0, "real": side(10, 40, 0.4), "sim": side(9, 38, 0.35)},
    {"policy": "skip-join-mlfq", "rate": 1.0, "real": side(5, 50, 0.1), "sim": side(4, 45, 0.1)},
    {"policy": "oracle", "rate": 1.0, "real": side(4, 60, 0.08), "sim": side(4, 55, 0.05)},
    {"policy": "fcfs", "rate": 2.0, "real": side(20, 80, 0.8), "sim": side(18, 70, 0.7)},
    {"policy": "skip-join-mlfq", "rate": 2.0, "real": side(8, 90, 0.2), "sim": side(7, 80, 0.2)},
    {"policy": "oracle", "rate": 2.0, "real": side(6, 99, 0.1), "sim": side(6, 95, 0.1)},
]


def test_comparison_table_pairs_real_and_sim_rows_with_ratios() -> None:
    lines = comparison_table(RUNS).splitlines()
    head = lines[0].split()
    assert head[:3] == ["policy", "rate", "side"]
    assert {"JCT/fcfs", "p99/fcfs", "norm/fcfs", "norm/oracle"} <= set(lines[0].split())
    rows = [line.split() for line in lines[2:] if line.strip()]
    assert len(rows) == 12
    sj_real = next(r for r in rows if r[:3] == ["skip-join-mlfq", "1", "real"])
    sj_sim = rows[rows.index(sj_real) + 1]
    assert sj_sim[:3] == ["skip-join-mlfq", "1", "sim"]  # the simulation right below
    assert sj_real[-4:] == ["0.5", "1.25", "0.25", "1.25"]  # JCT/F, p99/F, norm/F, norm/O
    assert sj_sim[-4:] == ["0.444", "1.18", "0.286", "2"]
    sim_only = comparison_table([{k: v for k, v in r.items() if k != "real"} for r in RUNS])
    assert "real" not in sim_only.split()


def test_compact_runs_drops_per_request_lists() -> None:
    runs = [{"policy": "fcfs", "rate": 1.0, "real": {"jct_mean": 1.0, "jcts": [1], "requests": []}}]
    assert compact_runs(runs) == [{"policy": "fcfs", "rate": 1.0, "real": {"jct_mean": 1.0}}]
    assert "jcts" in runs[0]["real"]  # not modified in place


@pytest.mark.parametrize("runs", [RUNS[:3], RUNS], ids=["one-rate", "two-rates"])
def test_figure_is_a_png(tmp_path, runs) -> None:
    path = write_figure(tmp_path / "sub" / "fig.png", runs, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
