"""Build a scheduling policy by name (config files and command lines name policies)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastserve.runtime.sched.cost_model import CostModel
from fastserve.runtime.sched.gittins import GittinsPolicy
from fastserve.runtime.sched.mlfq import PlainMLFQ, SkipJoinMLFQ
from fastserve.runtime.sched.oracle import OutputOracle, TotalWorkOracle
from fastserve.runtime.sched.policy import FCFSPolicy, SchedulingPolicy


def _no_options(name: str, factory: Callable[[], SchedulingPolicy]) -> Callable[..., Any]:
    def build(cost_model: CostModel | None, **options: Any) -> SchedulingPolicy:
        if options:
            raise ValueError(f"policy {name!r} takes no options, got {sorted(options)}")
        return factory()

    return build


def _needs(cost_model: CostModel | None, name: str) -> CostModel:
    if cost_model is None:
        raise ValueError(f"policy {name!r} needs a cost model to price prefill and decode")
    return cost_model


_FACTORIES: dict[str, Callable[..., SchedulingPolicy]] = {
    "fcfs": _no_options("fcfs", FCFSPolicy),
    "mlfq": lambda cost_model, **options: PlainMLFQ(cost_model, **options),
    "skip-join-mlfq": lambda cost_model, **options: SkipJoinMLFQ(cost_model, **options),
    "oracle": lambda cost_model, **options: TotalWorkOracle(_needs(cost_model, "oracle"), **options),
    "oracle-output": _no_options("oracle-output", OutputOracle),
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
    "true-oracle": "oracle",
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


def parse_option_value(raw: str) -> Any:
    """A policy option's value: JSON (numbers, true/false, quoted strings), else the text."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_option_items(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> options (values as `parse_option_value` reads them)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"policy option must be KEY=VALUE, got {item!r}")
        options[key.strip()] = parse_option_value(raw)
    return options


def split_policy_spec(spec: str) -> tuple[str, list[str]]:
    """`NAME[:KEY=VALUE[:KEY=VALUE...]]` -> (name as written, option items as written)."""
    name, *items = spec.strip().split(":")
    return name, items


def parse_policy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """A policy spec -> (canonical name, options), for commands that compare policies,
    e.g. `gittins:ignore_max_tokens=true:num_levels=8`."""
    name, items = split_policy_spec(spec)
    try:
        options = parse_option_items(items)
    except ValueError as bad:
        raise ValueError(f"{bad} in {spec!r}") from None
    return canonical_policy_name(name), options


def canonical_policy_spec(spec: str) -> str:
    """`spec` with the policy's registry name (options kept as written)."""
    name, items = split_policy_spec(spec)
    return ":".join([canonical_policy_name(name), *items])


def make_policy_from_spec(spec: str, cost_model: CostModel | None = None) -> SchedulingPolicy:
    name, options = parse_policy_spec(spec)
    return make_policy(name, cost_model, **options)
