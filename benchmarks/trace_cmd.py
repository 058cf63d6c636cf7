"""`fastserve trace LOG [REQUEST_ID]`: one request's life, or the slowest requests, from logs.

    make serve ARGS="--log-level debug" 2> server.log     # info is enough; debug adds ticks
    fastserve trace server.log                            # the 10 slowest, where time went
    fastserve trace server.log req-3f2a1c-7               # that request's timeline
    fastserve trace server.log --json | jq .              # the same for tools

The parsing and the breakdown live in `benchmarks/trace_timeline.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from typing import Any

from fastserve.benchmarks.trace_timeline import CATEGORIES, RequestTrace, read_traces, slowest


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("log", help="JSON-lines log of the server's processes ('-': stdin)")
    p.add_argument(
        "request_id", nargs="?", default=None, help="show this request (default: the slowest)"
    )
    p.add_argument("-n", "--slowest", type=int, default=10, help="how many slowest requests")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        with _open(args.log) as f:
            traces = read_traces(f, args.request_id)
    except OSError as exc:
        print(f"fastserve trace: {exc}", file=sys.stderr)
        return 1
    if args.request_id is not None:
        trace = traces.get(args.request_id)
        if trace is None:
            print(f"fastserve trace: no events of {args.request_id} in {args.log}", file=sys.stderr)
            return 1
        report = {**trace.summary(), "timeline": trace.timeline()}
        print(json.dumps(report, indent=1) if args.json else timeline_table(trace))
        return 0
    worst = slowest(traces, args.slowest)
    if args.json:
        print(json.dumps({"requests": len(traces), "slowest": [t.summary() for t in worst]},
                         indent=1))  # fmt: skip
    else:
        print(slowest_table(worst, len(traces)))
    return 0


def _open(path: str) -> Any:
    if path == "-":
        return nullcontext(sys.stdin)
    return open(path, encoding="utf-8", errors="replace")  # a torn last line is skipped


def _s(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _detail(row: dict[str, Any]) -> str:
    skip = ("t", "event", "actor")
    return " ".join(f"{k}={_short(v)}" for k, v in row.items() if k not in skip)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _breakdown_line(summary: dict[str, Any]) -> str:
    parts, jct = summary["breakdown_s"], summary["jct_s"]
    total = summary["breakdown_total_s"] or 1.0
    cells = [f"{k} {parts[k]:.3f} ({100 * parts[k] / total:.0f}%)" for k in CATEGORIES]
    return f"time went (s): {', '.join(cells)}; sum {total:.3f}, JCT {jct:.3f}"


def timeline_table(trace: RequestTrace) -> str:
    """A header line, one line per event (time since arrival), and the breakdown."""
    s = trace.summary()
    head = (
        f"{s['request_id']}: {s['finish_reason'] or 'not finished in this log'}, "
        f"JCT {_s(s['jct_s'])} s, TTFT {_s(s['ttft_s'])} s, "
        f"{s['prompt_tokens'] or '?'} prompt + {s['completion_tokens'] or '?'} output tokens, "
        f"entry level {s['entry_level'] if s['entry_level'] is not None else '-'}, "
        f"{s['preemptions']} preemptions, {s['offloads']} offloads, {s['uploads']} uploads"
    )
    lines = [head, f"{'t (s)':>9s}  {'event':15s} {'actor':14s} detail"]
    for row in trace.timeline():
        actor = str(row["actor"])[:14]
        lines.append(f"{row['t']:9.3f}  {row['event']:15s} {actor:14s} {_detail(row)}")
    if s["ticks"]:
        lines.append(f"ran in {s['ticks']} ticks ({trace.tokens_fed} tokens fed)")
    lines.append(_breakdown_line(s))
    return "\n".join(lines)


def slowest_table(traces: list[RequestTrace], total: int) -> str:
    """One row per request: JCT, TTFT, seconds per category, preemptions and KV moves."""
    head = ["request", "finish", "JCT s", "TTFT s", *(f"{c} s" for c in CATEGORIES),
            "preempt", "swaps", "levels"]  # fmt: skip
    rows = [head]
    for tr in traces:
        s = tr.summary()
        rows.append([
            s["request_id"], s["finish_reason"] or "-", _s(s["jct_s"]), _s(s["ttft_s"]),
            *(_s(s["breakdown_s"][c]) for c in CATEGORIES),
            str(s["preemptions"]), str(s["offloads"] + s["uploads"]), str(s["level_changes"]),
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = [f"{len(traces)} slowest of {total} requests in the log"]
    for k, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))))  # fmt: skip
        if k == 0:
            out.append("-" * len(out[-1]))
    return "\n".join(out)

