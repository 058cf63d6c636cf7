"""Benchmarking, load generation, workloads, profiling, simulation and log analysis.

The `fastserve bench/simulate/profile/trace` commands live here (`deploy/cli.py` dispatches
to them), next to the standalone comparison scripts (`python benchmarks/NAME.py`). Nothing
that serving needs is imported from this package.
"""
