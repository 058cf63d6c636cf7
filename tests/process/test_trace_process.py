"""`fastserve trace` over the logs of a real (in-process) server whose jobs are preempted
and swapped: the timeline shows it, and the breakdown accounts for the whole JCT."""

import pytest
import structlog

from fastserve.benchmarks.trace_cmd import slowest_table, timeline_table
from fastserve.benchmarks.trace_timeline import read_traces
from fastserve.runtime.frontend.events import Finished
from fastserve.runtime.logging import configure_logging
from tests.inprocess_harness import PROMPTS, run_all, tiny_config


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "server.log"
    with open(path, "w", buffering=1) as stream:  # line-buffered: one line per write
        configure_logging("server", "debug", stream=stream)
        try:
            yield path
        finally:  # later tests must not log into a closed file
            structlog.reset_defaults()
            structlog.contextvars.clear_contextvars()


@pytest.mark.timeout(120)
async def test_trace_of_a_preempted_and_swapped_request(tmp_path, log_file) -> None:
    # As the in-process swapping test: 10 jobs, a 40-block device pool, skip-join MLFQ.
    cfg = tiny_config(tmp_path, device=40, host=400, batch=4, policy="skip-join-mlfq")
    results, core = await run_all(cfg, max_tokens=24)
    swaps = core.swaps
    assert all(isinstance(end, Finished) for _, end in results)
    assert swaps.num_offloads > 0 and swaps.num_uploads > 0

    with open(log_file) as f:
        traces = read_traces(f)
    assert len(traces) == len(PROMPTS)
    swapped = [t for t in traces.values() if t.count("offload_done") and t.count("upload_done")]
    assert swapped, "no request was offloaded and uploaded again"
    for trace in swapped:
        s = trace.summary()
        kinds = [m.kind for m in trace.marks]
        assert s["complete"] and s["finish_reason"] == "length" and s["preemptions"] >= 1
        assert {"arrived", "queued", "admitted", "first_token", "resumed", "finished"} <= set(
            kinds
        )
        # In order: admitted, then the move out, then back, then the end.
        order = [kinds.index(k) for k in ("admitted", "offload_start", "offload_done",
                                          "upload_start", "upload_done", "finished")]  # fmt: skip
        assert order == sorted(order), kinds
        parts = s["breakdown_s"]
        assert parts["preempted"] + parts["swapping"] > 0 and parts["decode"] > 0
        # Stamps of the frontend's arrival and finish lines against its own JCT figure.
        assert s["breakdown_total_s"] == pytest.approx(s["jct_s"], abs=0.02)
        assert trace.ticks > 0  # debug: the tick lines name it
    table = timeline_table(swapped[0])
    assert "offload_done" in table and "time went" in table
    assert "slowest of 10 requests" in slowest_table(list(traces.values()), 10)
