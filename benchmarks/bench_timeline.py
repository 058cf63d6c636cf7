"""Queue depth over a benchmark run, as the client saw it, and its PNG.

Waiting: requests sent and without a first token yet (queued or in prefill at the
server); running: requests streaming tokens. Both come from the per-request times the load
generator keeps anyway (sent, first token, finish), so the figure costs no extra memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastserve.benchmarks.bench_report import save_figure


def queue_depth(requests: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
    """(times, waiting, running): step functions, each count holding from its time until
    the next one. `requests` are `RequestResult.to_dict()` rows (seconds since the run
    started); one that never finished is left out, one without a token only waits."""
    changes: list[tuple[float, int, int]] = []  # (time, d waiting, d running)
    for r in requests:
        sent, first, end = r.get("arrival"), r.get("first_token"), r.get("finish")
        if sent is None or end is None:
            continue
        if first is None:
            changes += [(sent, 1, 0), (end, -1, 0)]
        else:
            changes += [(sent, 1, 0), (first, -1, 1), (end, 0, -1)]
    if not changes:
        return np.zeros(0), np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    changes.sort(key=lambda c: c[0])
    times = np.array([c[0] for c in changes], dtype=float)
    waiting = np.cumsum([c[1] for c in changes])
    running = np.cumsum([c[2] for c in changes])
    # Several changes at one instant: keep the count after the last of them.
    last = np.append(times[1:] != times[:-1], True)
    return times[last], waiting[last], running[last]


def write_queue_figure(
    path: str | Path, series: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], title: str = ""
) -> Path:
    """PNG: one panel per (label, requests) with waiting and running over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(series))
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 3.8), squeeze=False, sharey=True)
    for ax, (label, requests) in zip(axes[0], series, strict=False):
        times, waiting, running = queue_depth(requests)
        if times.size:
            ax.step(times, waiting, where="post", label="waiting (no token yet)")
            ax.step(times, running, where="post", label="streaming")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("time since the run started (s)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("requests")
    return save_figure(fig, path, title, n)
