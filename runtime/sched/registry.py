"""Build a scheduling policy by name (config files and command lines name policies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.gittins import GittinsPolicy
from fastserve.runtime.sched.mlfq import PlainMLFQ, SkipJoinMLFQ
from fastserve.runtime.sched.oracle import SRPTOracle
from fastserve.runtime.sched.policy import FCFSPolicy, SchedulingPolicy


def _no_options(name: str, factory: Callable[[], SchedulingPolicy]) -> Callable[..., Any]:
    def build(cost_model: CostModel | None, **options: Any) -> SchedulingPolicy:
        if options:
            raise ValueError(f"policy {name!r} takes no options, got {sorted(options)}")
        return factory()

    return build


_FACTORIES: dict[str, Callable[..., SchedulingPolicy]] = {
    "fcfs": _no_options("fcfs", FCFSPolicy),
    "mlfq": lambda cost_model, **options: PlainMLFQ(cost_model, **options),
    "skip-join-mlfq": lambda cost_model, **options: SkipJoinMLFQ(cost_model, **options),
    "oracle": _no_options("oracle", SRPTOracle),
    "gittins": lambda cost_model, **options: GittinsPolicy(cost_model, **options),
}
_ALIASES = {
    "fifo": "fcfs",
    "plain-mlfq": "mlfq",
    "skipjoin-mlfq": "skip-join-mlfq",
    "skip-join": "skip-join-mlfq",
    "fastserve": "skip-join-mlfq",
    "srpt": "oracle",
    "srpt-oracle": "oracle",
}
POLICY_NAMES = tuple(_FACTORIES)


def canonical_policy_name(name: str) -> str:
    """The registry's name for `name` (case, '_' vs '-', and aliases ignored)."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _FACTORIES:
        known = ", ".join(sorted(set(_FACTORIES) | set(_ALIASES)))
        raise ValueError(f"unknown scheduling policy {name!r}; known: {known}")
    return key


def make_policy(name: str, cost_model: CostModel | None = None, **options: Any) -> SchedulingPolicy:
    """A fresh policy. MLFQ options are SkipJoinMLFQ's keyword arguments; skip-join needs
    `cost_model` (prefill estimates), plain MLFQ uses it only for its base quantum."""
    return _FACTORIES[canonical_policy_name(name)](cost_model, **options)
