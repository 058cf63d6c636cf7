"""`fastserve trace`: timelines and time breakdowns from synthetic log lines, and the job
events the scheduler core collects for those logs."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from fastserve.benchmarks.trace_timeline import read_traces, slowest
from fastserve.deploy.cli import main
from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.job import Job, KVLocation
from fastserve.runtime.sched.job_events import MAX_INFO_LEVEL_CHANGES, JobEvents

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def line(t: float, event: str, actor: str = "scheduler", **fields) -> str:
    stamp = (T0 + timedelta(seconds=t)).isoformat().replace("+00:00", "Z")
    return json.dumps({"actor": actor, "pid": 1, "event": event, "level": "info",
                       "timestamp": stamp, **fields})  # fmt: skip


R = "req-x-1"
# Arrives at 0, queued 0.01, runs 0.1 (prefill), first token 0.3, preempted 0.5, offloaded
# 0.5-0.7, uploaded 1.0-1.1, resumed 1.2, demoted at 1.3, finished at 2.0.
LOG = [
    line(0.0, "request.arrived", "frontend", request_id=R, prompt_tokens=40, max_tokens=9),
    line(0.01, "request_queued", request_id=R, prompt_tokens=40),
    "Traceback (most recent call last):",  # not JSON: skipped
    line(0.1, "job_admitted", request_id=R, tick=3, queue_level=1, entry_level=1),
    line(0.1, "tick", tick=3, batch=[[R, 40], ["req-x-2", 1]]),
    line(0.3, "request.first_token", "frontend", request_id=R, ttft_s=0.3),
    line(0.35, "tick", tick=4, batch=[[R, 1]]),
    line(0.5, "job_preempted", request_id=R, tick=5, queue_level=1, location="device"),
    line(0.5, "kv_offload_start", request_id=R, tick=5, blocks=11),
    line(0.55, "kv_copy_done", "worker", request_id=R, direction="out", seconds=0.04),
    line(0.7, "kv_offload_done", request_id=R, tick=5, blocks=11, seconds=0.19),
    line(0.9, "swap_plan", "cache_manager", tick=8, offload=[], upload=[R]),
    line(1.0, "kv_upload_start", request_id=R, tick=9, blocks=11),
    line(1.1, "kv_upload_done", request_id=R, tick=9, blocks=11, seconds=0.09),
    line(1.2, "job_resumed", request_id=R, tick=10, queue_level=1, location="device"),
    line(1.3, "job_level", request_id=R, tick=11, queue_level=2, from_level=1, change="demoted"),
    line(1.99, "request_finished", request_id=R, finish_reason="length", jct_s=1.98),
    line(2.0, "request.finished", "frontend", request_id=R, finish_reason="length",
         completion_tokens=9, jct_s=2.0),
    # A short, quick request: queued 0.05, prefill 0.05, decode 0.1.
    line(0.2, "request.arrived", "frontend", request_id="req-x-2", prompt_tokens=5),
    line(0.25, "job_admitted", request_id="req-x-2", tick=3, queue_level=0, entry_level=0),
    line(0.3, "request.first_token", "frontend", request_id="req-x-2", ttft_s=0.1),
    line(0.4, "request.finished", "frontend", request_id="req-x-2", finish_reason="stop",
         jct_s=0.2),
]  # fmt: skip


def test_timeline_orders_events_relative_to_arrival_with_move_durations() -> None:
    # Processes' logs concatenated (frontend last): the marks come out in time order.
    frontend = [x for x in LOG if '"frontend"' in x]
    trace = read_traces([x for x in LOG if x not in frontend] + frontend)[R]
    rows = trace.timeline()
    kinds = [r["event"] for r in rows]
    assert kinds == [
        "arrived", "queued", "admitted", "first_token", "preempted", "offload_start",
        "copy_done", "offload_done", "upload_planned", "upload_start", "upload_done",
        "resumed", "demoted", "scheduler_done", "finished",
    ]  # fmt: skip
    assert rows[0]["t"] == 0.0 and rows[2]["t"] == pytest.approx(0.1)
    done = {r["event"]: r for r in rows}
    assert done["offload_done"]["wall_s"] == pytest.approx(0.2)
    assert done["offload_done"]["seconds"] == 0.19
    assert done["upload_done"]["wall_s"] == pytest.approx(0.1)
    assert done["demoted"]["from_level"] == 1 and done["demoted"]["queue_level"] == 2
    assert "level" not in done["demoted"]  # the log level is noise here
    assert trace.ticks == 2 and trace.tokens_fed == 41


def test_breakdown_gives_every_instant_one_category_and_sums_to_the_jct() -> None:
    trace = read_traces(LOG)[R]
    parts = trace.breakdown()
    assert parts["queued"] == pytest.approx(0.1)
    assert parts["prefill"] == pytest.approx(0.2)
    # Preempted 0.5-1.2 less the copies (0.2 + 0.1 s), which count as swapping.
    assert parts["swapping"] == pytest.approx(0.3)
    assert parts["preempted"] == pytest.approx(0.4)
    assert parts["decode"] == pytest.approx(0.2 + 0.8)  # 0.3-0.5 and 1.2-2.0
    s = trace.summary()
    assert s["breakdown_total_s"] == pytest.approx(s["jct_s"]) == pytest.approx(2.0)
    assert (s["preemptions"], s["offloads"], s["uploads"], s["level_changes"]) == (1, 1, 1, 1)
    assert s["entry_level"] == 1 and s["finish_reason"] == "length" and s["ttft_s"] == 0.3
    assert s["prompt_tokens"] == 40 and s["completion_tokens"] == 9 and s["complete"]


def test_one_request_filter_and_slowest_first() -> None:
    only = read_traces(LOG, request_id="req-x-2")
    assert list(only) == ["req-x-2"]  # R's lines mention it only in a tick batch
    short = only["req-x-2"].breakdown()
    assert short == pytest.approx(
        {"queued": 0.05, "prefill": 0.05, "decode": 0.1, "preempted": 0.0, "swapping": 0.0}
    )
    everything = read_traces(LOG)
    assert [t.request_id for t in slowest(everything, 5)] == [R, "req-x-2"]
    assert [t.request_id for t in slowest(everything, 1)] == [R]


def test_unfinished_request_ends_at_its_last_event() -> None:
    trace = read_traces(LOG[:9])[R]  # cut while it is preempted and offloading
    s = trace.summary()
    assert not s["complete"] and s["finish_reason"] is None
    assert s["breakdown_total_s"] == pytest.approx(0.5) == pytest.approx(s["jct_s"])


def test_trace_command_table_and_json(tmp_path, capsys) -> None:
    log = tmp_path / "server.log"
    log.write_text("\n".join(LOG) + "\n")
    for argv in (["trace", str(log)], ["trace", str(log), R]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
    text = capsys.readouterr().out
    assert "2 slowest of 2 requests" in text and "preempted" in text and "offload_done" in text
    with pytest.raises(SystemExit):
        main(["trace", str(log), R, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["request_id"] == R and len(report["timeline"]) == 15
    with pytest.raises(SystemExit) as done:
        main(["trace", str(log), "req-none"])
    assert done.value.code == 1


def job(rid: str, level: int = 0) -> Job:
    j = Job(rid, [1, 2, 3], SamplingParams(max_tokens=4), arrival=0.0, level=level)
    j.location = KVLocation.DEVICE
    return j


def names(events: JobEvents) -> list[tuple[str, str]]:
    return [(e, f["request_id"]) for _, e, f in events.drain()]


def test_job_events_admitted_preempted_resumed_and_level_changes() -> None:
    ev, a, b = JobEvents(), job("a", level=2), job("b")
    a.in_flight = True
    ev.on_schedule(1, [a, b], [(a, 3)], now=0.5)
    (level, event, fields), = ev.drain()  # fmt: skip
    assert (level, event) == ("info", "job_admitted")
    assert fields["entry_level"] == 2 and fields["waited_s"] == 0.5 and fields["tokens"] == 3
    a.in_flight, b.in_flight = False, True
    ev.on_schedule(2, [b, a], [(b, 3)], now=1.0)  # a ran at tick 1 and not now: preempted
    assert names(ev) == [("job_admitted", "b"), ("job_preempted", "a")]
    b.in_flight = True  # still in flight (pipeline): b is not preempted
    ev.on_schedule(3, [b, a], [], now=1.0)
    assert names(ev) == []
    b.in_flight, a.in_flight, a.level = False, True, 3
    ev.on_schedule(4, [a, b], [(a, 1)], now=1.0)
    out = ev.drain()
    assert [(e, f["request_id"]) for _, e, f in out] == [
        ("job_level", "a"), ("job_resumed", "a"), ("job_preempted", "b")
    ]  # fmt: skip
    assert out[0][2]["change"] == "demoted" and out[0][2]["from_level"] == 2
    ev.forget("a")
    ev.forget("b")
    assert not any((ev._level, ev._running, ev._preempted, ev._admitted))


def test_level_changes_past_the_cap_go_to_debug() -> None:
    ev, a = JobEvents(), job("a")
    for tick in range(2 * MAX_INFO_LEVEL_CHANGES + 2):
        a.level = tick % 2
        ev.on_schedule(tick, [a], [], now=0.0)
    levels = [level for level, event, _ in ev.drain() if event == "job_level"]
    assert levels.count("info") == MAX_INFO_LEVEL_CHANGES and "debug" in levels
