"""What the soak test sends: one Job per request, decided up front from a seed.

Deciding everything before the run (channel, body, whether and where it is cut, hostile
input) makes a failing soak reproducible from its seed and keeps the clients free of
randomness of their own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tests.fuzz_cases import (
    HttpCase,
    random_http_case,
    random_json_text,
    random_multipart,
)

CHANNELS = ("http", "sse", "ws", "zmq")  # non-streaming HTTP, SSE, websocket, ZeroMQ client
_TEXT = "the cat sat on a mat while seven quick foxes jumped over lazy dogs near old river \
banks under bright summer skies and people talked about music history science"
WORDS = _TEXT.split()  # prompts of real words: the tokenizers split them like text
FINISHED = ("stop", "length")


@dataclass
class Outcome:
    """How one job ended. "ok": ran to a normal end, checked; "cut": aborted or
    disconnected as planned; "refused": hostile input answered 4xx (or, on ZeroMQ, sent
    and dropped); "shed": 429/503 from admission control, not a failure; "error": a
    well-formed request that did not end well, and "hostile_5xx": hostile input that got
    a 5xx; "timeout": no end within the request timeout (stuck, or the server far too
    slow for the concurrency). Any of the last three fails the soak."""

    kind: str
    detail: str = ""  # why, for errors


def status_outcome(status: int, hostile: bool, what: str = "") -> Outcome:
    """An HTTP-style status that ended a request before any output."""
    if status in (429, 503):
        return Outcome("shed")
    if 400 <= status < 500:
        return Outcome("refused") if hostile else Outcome("error", f"{status} {what}"[:200])
    if status >= 500:
        return Outcome("hostile_5xx" if hostile else "error", f"{status} {what}"[:200])
    return Outcome("ok" if status == 200 else "error", f"status {status}")


def check_end(job: Job, finish: str | None, completion_tokens: int | None) -> Outcome:
    """A request that was not cut must finish normally within its max_tokens."""
    if finish not in FINISHED:
        return Outcome("error", f"finish_reason {finish!r}")
    if completion_tokens is not None and completion_tokens > job.max_tokens:
        return Outcome("error", f"{completion_tokens} tokens > max_tokens {job.max_tokens}")
    return Outcome("ok")


@dataclass
class Job:
    """One request of the soak."""

    index: int
    channel: str  # one of CHANNELS
    kind: str  # "completion" | "chat"
    body: dict[str, Any]  # the OpenAI body (unused when hostile)
    cut: str | None = None  # None: run to the end; "abort" or "disconnect" part-way
    cut_after: int = 0  # deltas received before cutting (0: right after sending)
    cut_delay_s: float = 0.0  # non-streaming HTTP and early cuts: seconds before cutting
    hostile: HttpCase | str | list[bytes] | None = None  # raw input sent instead of `body`

    @property
    def max_tokens(self) -> int:
        return int(self.body.get("max_tokens", 0))


def _prompt(rnd: random.Random, words: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, words)))


def _body(
    rnd: random.Random, kind: str, stream: bool, max_tokens: int, words: int
) -> dict[str, Any]:
    body: dict[str, Any] = {"max_tokens": rnd.randint(1, max_tokens), "stream": stream}
    if kind == "chat":
        body["messages"] = [{"role": "user", "content": _prompt(rnd, words)}]
    else:
        body["prompt"] = _prompt(rnd, words)
    if rnd.random() < 0.5:
        body["temperature"] = 0
    else:
        body |= {"temperature": 0.8, "top_p": 0.9, "seed": rnd.randint(0, 2**31 - 1)}
    if rnd.random() < 0.5:
        body["ignore_eos"] = True  # runs to max_tokens: longer jobs, more KV churn
    if rnd.random() < 0.1:
        body["stop"] = [rnd.choice(WORDS)]
    return body


def _hostile(rnd: random.Random, index: int, channel: str) -> HttpCase | str | list[bytes]:
    """The fuzzers' inputs, shaped for the channel: an HTTP case, a websocket text
    message (a fuzzed body in a valid envelope most of the time, so that it reaches
    request validation), or ZeroMQ client frames."""
    if channel in ("http", "sse"):
        return random_http_case(rnd)
    if channel == "ws":
        text = random_json_text(rnd)[1].decode("utf-8", "replace")
        if rnd.random() < 0.8:
            kind = rnd.choice(["completion", "chat", "embedding", 7])
            return f'{{"id": "h{index}", "type": "{kind}", "body": {text}}}'
        return text
    return random_multipart(rnd)


def make_plan(
    n: int,
    seed: int = 0,
    cut_fraction: float = 0.3,
    hostile_fraction: float = 0.1,
    max_tokens: int = 32,
    prompt_words: int = 40,
) -> list[Job]:
    """`n` jobs over every channel: `cut_fraction` of them aborted or disconnected at a
    random point, `hostile_fraction` of them hostile input instead of a request."""
    rnd = random.Random(seed)
    jobs = []
    for i in range(n):
        channel = CHANNELS[i % len(CHANNELS)]  # even coverage whatever n is
        kind = "chat" if rnd.random() < 0.5 else "completion"
        body = _body(rnd, kind, channel == "sse", max_tokens, prompt_words)
        job = Job(i, channel, kind, body)
        if rnd.random() < hostile_fraction:
            job.hostile = _hostile(rnd, i, channel)
        elif rnd.random() < cut_fraction / max(1e-9, 1 - hostile_fraction):
            job.cut = "abort" if rnd.random() < 0.5 else "disconnect"
            job.cut_after = rnd.randint(0, max(0, job.max_tokens - 1))
            job.cut_delay_s = rnd.uniform(0.0, 0.5)
        jobs.append(job)
    return jobs
