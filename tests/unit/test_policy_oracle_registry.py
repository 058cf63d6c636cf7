"""SRPT oracles' ordering and the policy registry."""

import pytest

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.job import Job
from fastserve.runtime.sched.mlfq import PlainMLFQ, SkipJoinMLFQ
from fastserve.runtime.sched.oracle import OutputOracle, TotalWorkOracle
from fastserve.runtime.sched.policy import FCFSPolicy
from fastserve.runtime.sched.registry import POLICY_NAMES, canonical_policy_name, make_policy

COST = CostModel.affine(0.0, 0.001, 0.010, 0.0)


def job(rid: str, out: int | None, arrival: float = 0.0) -> Job:
    return Job(rid, [0], SamplingParams(), arrival, true_output_len=out)


def test_output_oracle_orders_by_remaining_output_then_arrival() -> None:
    p = OutputOracle()
    jobs = [job("a", 10, 0.0), job("b", 3, 1.0), job("c", 3, 0.5), job("d", 7, 0.2)]
    for j in jobs:
        p.add(j, j.arrival)
    assert [j.request_id for j in p.priority_order(2.0)] == ["c", "b", "d", "a"]
    jobs[0].output_ids.extend([0] * 8)  # a has 2 left
    assert [j.request_id for j in p.priority_order(2.0)][0] == "a"
    p.remove(jobs[0])
    assert [j.request_id for j in p.priority_order(2.0)] == ["c", "b", "d"]


def test_oracle_needs_true_lengths() -> None:
    with pytest.raises(ValueError, match="true_output_len"):
        OutputOracle().add(job("a", None), 0.0)
    with pytest.raises(ValueError, match="true_output_len"):
        TotalWorkOracle(COST).add(job("a", None), 0.0)


def test_registry_names_aliases_and_errors() -> None:
    assert set(POLICY_NAMES) == {
        "fcfs", "mlfq", "skip-join-mlfq", "oracle", "oracle-output", "gittins"
    }  # fmt: skip
    assert isinstance(make_policy("fcfs"), FCFSPolicy)
    assert type(make_policy("mlfq", COST)) is PlainMLFQ
    assert type(make_policy("Skip_Join_MLFQ", COST)) is SkipJoinMLFQ
    assert isinstance(make_policy("srpt", COST), TotalWorkOracle)
    assert isinstance(make_policy("oracle-output"), OutputOracle)
    with pytest.raises(ValueError, match="needs a cost model"):
        make_policy("oracle")
    assert canonical_policy_name("fastserve") == "skip-join-mlfq"
    p = make_policy("skip-join-mlfq", COST, num_queues=3, starvation_threshold=5.0)
    assert isinstance(p, SkipJoinMLFQ) and p.num_queues == 3 and p.starvation_threshold == 5.0
    with pytest.raises(ValueError, match="unknown scheduling policy 'lifo'.*known"):
        make_policy("lifo")
    with pytest.raises(ValueError, match="takes no options"):
        make_policy("fcfs", COST, num_queues=3)
    with pytest.raises(ValueError, match="cost model"):
        make_policy("skip-join-mlfq")


def test_policy_specs_carry_options_to_the_policy_and_the_server_command() -> None:
    from fastserve.benchmarks.bench_server import serve_command
    from fastserve.runtime.sched.registry import (
        canonical_policy_spec,
        make_policy_from_spec,
        parse_policy_spec,
    )

    spec = "Skip_Join:num_queues=3:queue_order=arrival:starvation_threshold=2.5"
    assert parse_policy_spec(spec) == (
        "skip-join-mlfq",
        {"num_queues": 3, "queue_order": "arrival", "starvation_threshold": 2.5},
    )
    assert canonical_policy_spec("FIFO") == "fcfs"
    assert canonical_policy_spec("gittins:ignore_max_tokens=true").endswith("=true")
    p = make_policy_from_spec(spec, COST)
    assert isinstance(p, SkipJoinMLFQ) and p.num_queues == 3 and p.queue_order == "arrival"
    cmd = serve_command("gittins:ignore_max_tokens=true:num_levels=8", 8123, ["--dtype", "float32"])
    i = cmd.index("--policy")
    assert cmd[i + 1 : i + 4] == [
        "gittins",
        "--policy-option=ignore_max_tokens=true",
        "--policy-option=num_levels=8",
    ]
    assert cmd[-2:] == ["--dtype", "float32"]
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_policy_spec("mlfq:num_queues")
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        parse_policy_spec("lifo:x=1")
    with pytest.raises(TypeError):
        make_policy_from_spec("skip-join-mlfq:no_such_knob=1", COST)
