"""Request timelines from FastServe's JSON-lines logs, and where each request's time went.

Every process logs one JSON object per line (`runtime/logging.py`): `event`, `timestamp`
(UTC wall time, so lines of different processes on one host share a clock), `actor`, and
`request_id` / `tick` where they apply. The state changes a timeline needs are logged at
info: the frontend's arrival, first token and finish; the scheduler's queueing, first run
(`job_admitted`), level changes, preemptions and resumptions (`runtime/sched/job_events.py`)
and KV moves with their durations (`swap_book.py`). At debug the per-tick lines add how
many ticks each request ran in and when the cache manager planned its moves.

The breakdown gives every instant from arrival to the end one category, in this order of
precedence: swapping (its KV is being copied), preempted (started, then left out of the
batch), else its phase: queued (not scheduled yet), prefill (until its first token),
decode. The categories therefore add up to the request's time in the system.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Raw event -> timeline kind. "request_admitted" is what older logs called "request_queued".
KINDS = {
    "request.arrived": "arrived",
    "request_queued": "queued",
    "request_admitted": "queued",
    "job_admitted": "admitted",
    "job_preempted": "preempted",
    "job_resumed": "resumed",
    "kv_offload_start": "offload_start",
    "kv_offload_done": "offload_done",
    "kv_upload_start": "upload_start",
    "kv_upload_done": "upload_done",
    "kv_recompute": "recompute",
    "kv_copy_done": "copy_done",
    "request.first_token": "first_token",
    "request_abort": "abort",
    "request_finished": "scheduler_done",
    "request.finished": "finished",
    "request.failed": "failed",
    "request.submit_failed": "failed",
}
CATEGORIES = ("queued", "prefill", "decode", "preempted", "swapping")
_ENDS = ("finished", "failed")  # the frontend's end of a request (what the client saw)
_NOISE = ("event", "timestamp", "level", "actor", "pid", "request_id")


@dataclass(slots=True)
class Mark:
    """One event of one request."""

    t: float  # seconds from the log's first line (small numbers keep microseconds exact)
    kind: str  # a value of KINDS, "demoted"/"promoted", or "*_planned", "tick_failed"
    actor: str
    fields: dict[str, Any]


@dataclass
class RequestTrace:
    """Everything the logs say about one request."""

    request_id: str
    marks: list[Mark] = field(default_factory=list)
    ticks: int = 0  # ticks it ran in (debug logs only)
    tokens_fed: int = 0  # prompt chunks + decode tokens over those ticks
    first_tick: float | None = None  # stands in for "admitted" in logs without it

    def sort(self) -> None:
        self.marks.sort(key=lambda m: m.t)  # stable: same-time lines keep the log's order

    def first(self, kind: str) -> Mark | None:
        return next((m for m in self.marks if m.kind == kind), None)

    def count(self, kind: str) -> int:
        return sum(1 for m in self.marks if m.kind == kind)

    @property
    def arrival(self) -> float:
        mark = self.first("arrived") or self.first("queued")
        return mark.t if mark else self.marks[0].t

    @property
    def end_mark(self) -> Mark | None:
        return next((m for m in self.marks if m.kind in _ENDS), None) or self.first(
            "scheduler_done"
        )

    @property
    def end(self) -> float:
        mark = self.end_mark
        return mark.t if mark else self.marks[-1].t

    @property
    def jct(self) -> float:
        """The frontend's own figure where logged (its monotonic clock), else from stamps."""
        mark = self.end_mark
        if mark is not None and isinstance(mark.fields.get("jct_s"), int | float):
            return float(mark.fields["jct_s"])
        return self.end - self.arrival

    def breakdown(self) -> dict[str, float]:
        """Seconds per category (see the module doc); they sum to end - arrival."""
        start, end = self.arrival, self.end
        admitted = self.first("admitted")
        begin = admitted.t if admitted else (self.first_tick or end)
        first = self.first("first_token")
        first_t = first.t if first else end
        waits = self._intervals("preempted", "resumed", end)
        swaps = self._intervals("offload_start", "offload_done", end)
        swaps += self._intervals("upload_start", "upload_done", end)
        cuts = {start, end, begin, first_t, *(x for iv in waits + swaps for x in iv)}
        cuts = sorted({min(max(c, start), end) for c in cuts})
        out = dict.fromkeys(CATEGORIES, 0.0)
        for a, b in zip(cuts, cuts[1:], strict=False):
            mid = (a + b) / 2
            if any(s <= mid < e for s, e in swaps):
                category = "swapping"
            elif any(s <= mid < e for s, e in waits):
                category = "preempted"
            else:
                category = "queued" if mid < begin else "prefill" if mid < first_t else "decode"
            out[category] += b - a
        return out

    def _intervals(self, opener: str, closer: str, end: float) -> list[tuple[float, float]]:
        out, since = [], None
        for m in self.marks:
            if m.kind == opener and since is None:
                since = m.t
            elif m.kind == closer and since is not None:
                out.append((since, m.t))
                since = None
        if since is not None:
            out.append((since, end))  # still open when the request ended
        return out

    def timeline(self) -> list[dict[str, Any]]:
        """Marks with times relative to arrival; a finished move also shows its wall time."""
        start, opened, rows = self.arrival, {}, []
        for m in self.marks:
            row = {"t": round(m.t - start, 6), "event": m.kind, "actor": m.actor, **m.fields}
            if m.kind.endswith("_start"):
                opened[m.kind[: -len("_start")]] = m.t
            elif m.kind.endswith("_done") and m.kind[: -len("_done")] in opened:
                row["wall_s"] = round(m.t - opened.pop(m.kind[: -len("_done")]), 6)
            rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """One request in figures: the JSON row of `fastserve trace`."""
        end, first = self.end_mark, self.first("first_token")
        admitted, arrived = self.first("admitted"), self.first("arrived")
        parts = self.breakdown()
        ttft = None
        if first is not None:
            ttft = first.fields.get("ttft_s", round(first.t - self.arrival, 6))
        return {
            "request_id": self.request_id,
            "complete": end is not None,
            "finish_reason": _finish_reason(end),
            "jct_s": round(self.jct, 6),
            "ttft_s": ttft,
            "prompt_tokens": (arrived.fields.get("prompt_tokens") if arrived else None),
            "completion_tokens": end.fields.get("completion_tokens") if end else None,
            "entry_level": admitted.fields.get("entry_level") if admitted else None,
            "level_changes": self.count("demoted") + self.count("promoted"),
            "preemptions": self.count("preempted"),
            "offloads": self.count("offload_done"),
            "uploads": self.count("upload_done"),
            "recomputes": self.count("recompute"),
            "ticks": self.ticks or None,
            "breakdown_s": {k: round(v, 6) for k, v in parts.items()},
            "breakdown_total_s": round(sum(parts.values()), 6),
        }


def _finish_reason(end: Mark | None) -> str | None:
    if end is None:
        return None
    if end.kind == "failed":
        return "error"
    reason = end.fields.get("finish_reason")
    return str(reason) if reason is not None else None


def read_traces(lines: Iterable[str], request_id: str | None = None) -> dict[str, RequestTrace]:
    """Every request's trace from log lines (any order, any mix of processes); with
    `request_id`, only that request's (lines not naming it are skipped unparsed)."""
    traces: dict[str, RequestTrace] = {}
    anchor: datetime | None = None

    def trace(rid: str) -> RequestTrace:
        if rid not in traces:
            traces[rid] = RequestTrace(rid)
        return traces[rid]

    def wanted(rid: object) -> bool:
        return isinstance(rid, str) and (request_id is None or rid == request_id)

    for line in lines:
        if (request_id is not None and request_id not in line) or not line.startswith("{"):
            continue  # not this request, or not a log object (tracebacks, progress bars)
        try:
            rec = json.loads(line)
            event, stamp = rec["event"], datetime.fromisoformat(rec["timestamp"])
            anchor = anchor or stamp
            t = (stamp - anchor).total_seconds()
        except (ValueError, KeyError, TypeError):  # not ours, or a stamp without a zone
            continue
        actor = str(rec.get("actor", ""))
        if event == "tick":  # debug: one line per tick, with (request id, tokens) per job
            for rid, n in rec.get("batch") or []:
                if wanted(rid):
                    tr = trace(rid)
                    tr.ticks, tr.tokens_fed = tr.ticks + 1, tr.tokens_fed + int(n)
                    tr.first_tick = t if tr.first_tick is None else tr.first_tick
        elif event == "swap_plan":  # debug: the cache manager's decision, before the move
            for key in ("offload", "upload"):
                for rid in rec.get(key) or []:
                    if wanted(rid):
                        trace(rid).marks.append(Mark(t, f"{key}_planned", actor, {}))
        elif event == "tick_failed" and rec.get("request_ids"):
            for rid in rec["request_ids"]:
                if wanted(rid):
                    trace(rid).marks.append(Mark(t, "tick_failed", actor, _fields(rec)))
        elif wanted(rec.get("request_id")) and (event in KINDS or event == "job_level"):
            kind = KINDS.get(event) or str(rec.get("change", "level"))
            trace(rec["request_id"]).marks.append(Mark(t, kind, actor, _fields(rec)))
    for tr in list(traces.values()):
        if not tr.marks:  # only seen in tick lines (a truncated log): nothing to anchor
            del traces[tr.request_id]
        else:
            tr.sort()
    return traces


def _fields(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in _NOISE and v is not None}


def slowest(traces: dict[str, RequestTrace], n: int) -> list[RequestTrace]:
    """The `n` requests with the longest time in the system, longest first."""
    return sorted(traces.values(), key=lambda tr: tr.jct, reverse=True)[: max(0, n)]
