"""Admission control: bound the work waiting in the server; past the bound, a fast 429.

What is counted: every request the frontend accepted and that has not finished yet
(running or queued in the scheduler: the frontend cannot tell them apart, and both hold
memory and delay newcomers), and, for the token bound, each one's prompt + max_tokens
(its worst case, known at admission; what it really generates is not). A request larger
than the token bound on its own is still admitted when nothing else is in flight, so a
legal request is never refused forever.

Retry-After estimates when enough of the backlog will have finished to make room: the
backlog's drain time (from the throughput measured over recent scheduler outputs, or,
before there is any, from the engine's cost model) times the share of it that has to go.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from fastserve.runtime.frontend.errors import RequestError

# (prompt tokens pending, tokens left) per unfinished request; called only to refuse one,
# so admitting stays O(1).
BacklogFn = Callable[[], Iterable[tuple[int, int]]]
MAX_RETRY_AFTER_S = 600  # a client told to wait longer would rather hear "try elsewhere"


@dataclass
class Backlog:
    """Work the server still has to do for its unfinished requests."""

    requests: int = 0
    prefill_tokens: int = 0  # prompt tokens not processed yet (no first token)
    decode_tokens: int = 0  # tokens still to generate, at most (max_tokens - generated)

    def add(self, prompt_pending: int, decode_left: int) -> None:
        self.requests += 1
        self.prefill_tokens += prompt_pending
        self.decode_tokens += decode_left


class CostEstimate(Protocol):
    """The parts of the scheduler's CostModel used here (seconds per iteration)."""

    def estimate_prefill(self, n_tokens: int) -> float: ...

    def estimate_decode(self, batch_size: int, context_tokens: int = 0) -> float: ...


class ThroughputMeter:
    """Tokens (prompts processed + tokens generated) per second of busy time, recently.

    Gaps between outputs longer than `max_gap_s` count as idle, not as slow work (they
    and the output that ends them are left out): the first burst after a quiet hour must
    not look like a server doing one token an hour.
    """

    def __init__(self, window: int = 256, max_gap_s: float = 2.0) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=window)
        self._max_gap_s = max_gap_s

    def record(self, now: float, tokens: int) -> None:
        if tokens > 0:
            self._samples.append((now, tokens))

    def tokens_per_s(self) -> float | None:
        """None until there are enough samples to say anything."""
        if len(self._samples) < 8:
            return None
        busy, tokens = 0.0, 0
        samples = list(self._samples)
        for (before, _), (at, n) in zip(samples, samples[1:], strict=False):
            if at - before <= self._max_gap_s:  # else the server was idle: skip that span
                busy += at - before
                tokens += n
        return tokens / busy if busy > 0.05 else None


class AdmissionControl:
    """The bounds (0 = unbounded) and the Retry-After estimate."""

    def __init__(
        self,
        max_requests: int = 0,
        max_tokens: int = 0,
        cost_model: CostEstimate | None = None,
        max_batch_jobs: int = 32,
    ) -> None:
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self.meter = ThroughputMeter()
        self._cost = cost_model
        self._batch = max(1, max_batch_jobs)

    def check_count(self, unfinished: int, backlog: BacklogFn) -> None:
        """Before parsing (cheap): refuse when the request bound is already reached."""
        if self.max_requests and unfinished >= self.max_requests:
            share = (unfinished - self.max_requests + 1) / unfinished
            raise self._overloaded(
                f"the server has {unfinished} requests in flight, its limit "
                f"(--max-queued-requests {self.max_requests})",
                share,
                backlog,
            )

    def check_tokens(
        self, reserved: int, cost: int, unfinished: int, backlog: BacklogFn
    ) -> None:
        """After parsing: refuse when this request's prompt + max_tokens would pass the bound."""
        if not self.max_tokens or unfinished == 0 or reserved + cost <= self.max_tokens:
            return
        share = min(1.0, (reserved + cost - self.max_tokens) / max(reserved, 1))
        raise self._overloaded(
            f"this request's {cost} tokens (prompt + max_tokens) on top of the {reserved} in "
            f"flight pass the server's limit (--max-queued-tokens {self.max_tokens})",
            share,
            backlog,
        )

    def drain_seconds(self, work: Backlog) -> float:
        """How long the backlog takes to finish, by measurement, else by the cost model."""
        rate = self.meter.tokens_per_s()
        if rate:
            return (work.prefill_tokens + work.decode_tokens) / rate
        if self._cost is not None and work.requests:
            batch = min(self._batch, work.requests)
            steps = work.decode_tokens / batch
            prefill = self._cost.estimate_prefill(work.prefill_tokens) if work.prefill_tokens else 0
            return prefill + steps * self._cost.estimate_decode(batch)
        return float(work.requests)  # nothing known: a second per request

    def retry_after(self, share: float, backlog: Iterable[tuple[int, int]]) -> int:
        work = Backlog()
        for prompt_pending, decode_left in backlog:
            work.add(prompt_pending, decode_left)
        seconds = self.drain_seconds(work) * share
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds))))

    def _overloaded(self, why: str, share: float, backlog: BacklogFn) -> RequestError:
        wait = self.retry_after(share, backlog())
        return RequestError(
            f"The server is overloaded: {why}. Please retry after {wait} s.",
            status=429,
            err_type="rate_limit_error",
            code="rate_limit_exceeded",
            retry_after=wait,
        )
