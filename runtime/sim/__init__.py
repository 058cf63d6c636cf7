"""Discrete-event simulation of the scheduler over a cost model (no engine, no processes)."""

from fastserve.runtime.sim.metrics import RequestRecord, summarize
from fastserve.runtime.sim.simulator import SimResult, simulate, unloaded_jct
from fastserve.runtime.sim.workload import Request

__all__ = ["Request", "RequestRecord", "SimResult", "simulate", "summarize", "unloaded_jct"]
