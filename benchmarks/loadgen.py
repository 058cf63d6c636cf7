"""Replay a workload against a running FastServe (or any OpenAI-compatible) server.

Each request is sent at its arrival time to `/v1/completions` with `stream: true`; the
prompt is a list of token ids of exactly the requested length (random, or the shared
content a multi-turn workload describes), and `max_tokens` =
`min_tokens` = the output length with `ignore_eos`, so every job does exactly the work the
workload says. `logprobs: 0` makes every streamed chunk list its tokens, so the client
counts tokens (and sees the first one) even when a token's text is empty or withheld by
the detokenizer; the usage chunk cross-checks the count. Every chunk that carries tokens
is timed: the gaps between them are the inter-token latencies (ITL), kept in a bounded
sample (`runtime.sim.metrics.Reservoir`), never as a list per request.

Only loopback URLs are accepted: this is a benchmark for a local server, not a load tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from fastserve.benchmarks.server_metrics import (
    counter_delta,
    get_metrics,
    scheduler_counters,
    wait_idle,
)
from fastserve.runtime.sim.conversations import prompt_token_ids
from fastserve.runtime.sim.metrics import RequestRecord, Reservoir
from fastserve.runtime.sim.workload import Request

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_local_url(url: str) -> str:
    """The URL without a trailing slash; refuses anything but http on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise SystemExit(f"--url must be http on {', '.join(LOOPBACK_HOSTS)}; got {url!r}")
    return url.rstrip("/")


def prompt_ids(
    length: int, rng: np.random.Generator, token_range: tuple[int, int], repeat: bool
) -> list[int]:
    """`length` token ids in [low, high): random, or the low id repeated."""
    low, high = token_range
    if repeat:
        return [low] * length
    return rng.integers(low, high, size=length).tolist()


def request_body(
    model: str, ids: list[int], output_len: int, sampling: dict[str, float] | None = None
) -> dict[str, Any]:
    """A streaming completion that generates exactly `output_len` tokens; greedy unless
    `sampling` gives other fields (e.g. temperature, top_p), as users' clients send."""
    return {
        "model": model,
        "prompt": ids,
        "max_tokens": output_len,
        "min_tokens": output_len,
        "ignore_eos": True,
        "temperature": 0.0,  # greedy by default: every policy generates the same tokens
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": 0,
        **(sampling or {}),
    }


@dataclass
class RequestResult:
    """What the client saw of one request; times in seconds since the run started."""

    index: int
    prompt_len: int
    expected_output: int
    scheduled: float  # arrival time in the workload
    arrival: float = 0.0  # when the request was actually sent
    first_token: float | None = None
    finish: float | None = None
    output_tokens: int = 0  # tokens counted in the stream
    usage_tokens: int | None = None  # completion_tokens of the usage chunk
    finish_reason: str | None = None
    error: str | None = None
    last_chunk: float | None = None  # when the latest chunk with tokens came
    max_itl: float | None = None  # the longest gap between two such chunks (a stall)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.finish is not None
            and self.output_tokens == self.expected_output
            and self.usage_tokens in (None, self.expected_output)
        )

    def record(self) -> RequestRecord:
        finish = self.finish if self.finish is not None else self.arrival
        first = self.first_token if self.first_token is not None else finish
        return RequestRecord(
            f"r{self.index}", self.arrival, self.prompt_len, self.output_tokens, first, finish
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_chunk(result: RequestResult, chunk: dict[str, Any], now: float) -> float | None:
    """Fold one parsed stream chunk into the result; returns the gap since the previous
    chunk with tokens (an inter-token latency), None for the first or a tokenless one."""
    before = result.output_tokens
    if chunk.get("usage"):
        result.usage_tokens = chunk["usage"].get("completion_tokens")
    for choice in chunk.get("choices") or []:
        logprobs = choice.get("logprobs")
        if logprobs and logprobs.get("tokens") is not None:
            n = len(logprobs["tokens"])
        else:  # a server without logprobs: one token per non-empty text chunk
            n = 1 if choice.get("text") else 0
        if n and result.first_token is None:
            result.first_token = now
        result.output_tokens += n
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    if result.output_tokens == before:
        return None
    gap = None if result.last_chunk is None else now - result.last_chunk
    result.last_chunk = now
    if gap is not None and (result.max_itl is None or gap > result.max_itl):
        result.max_itl = gap
    return gap


def parse_sse_line(line: bytes) -> dict[str, Any] | str | None:
    """A `data:` line's JSON object, "[DONE]", or None for blank lines and comments."""
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith("data:"):
        return None
    payload = text[5:].strip()
    if payload == "[DONE]":
        return payload
    return json.loads(payload)


async def served_model(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(f"{url}/v1/models") as resp:
        resp.raise_for_status()
        return (await resp.json())["data"][0]["id"]


async def warm_up(
    session: aiohttp.ClientSession, url: str, bodies: Sequence[dict[str, Any]], timeout: float
) -> None:
    """Send `bodies` one after another and drain them: the first requests after a server
    starts pay one-off costs (allocations, caches) that would land on one policy's run."""
    for body in bodies:
        result = RequestResult(-1, len(body["prompt"]), body["max_tokens"], 0.0)
        await _one(session, url, body, result, time.perf_counter(), timeout)
        if result.error:
            raise RuntimeError(f"warm-up request failed: {result.error}")


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    result: RequestResult,
    t0: float,
    timeout: float,
    itl: Reservoir | None = None,
    in_flight: asyncio.Semaphore | None = None,
) -> None:
    await asyncio.sleep(max(0.0, t0 + result.scheduled - time.perf_counter()))
    # As vLLM's --max-concurrency: a request waits here for a slot and its latencies count
    # from when it is sent (the wait shows as send lag).
    async with in_flight or contextlib.nullcontext():
        await _send(session, url, body, result, t0, timeout, itl)


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    result: RequestResult,
    t0: float,
    timeout: float,
    itl: Reservoir | None,
) -> None:
    result.arrival = time.perf_counter() - t0
    try:
        async with asyncio.timeout(timeout):
            async with session.post(f"{url}/v1/completions", json=body) as resp:
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    return
                async for line in resp.content:
                    chunk = parse_sse_line(line)
                    if chunk == "[DONE]":
                        break
                    if isinstance(chunk, dict):
                        if "error" in chunk:
                            result.error = str(chunk["error"])[:200]
                            return
                        gap = apply_chunk(result, chunk, time.perf_counter() - t0)
                        if gap is not None and itl is not None:
                            itl.add(gap)
        result.finish = time.perf_counter() - t0
        if result.output_tokens != result.expected_output:
            result.error = f"got {result.output_tokens} tokens, asked {result.expected_output}"
    except TimeoutError:
        result.error = f"no answer within {timeout:.0f} s"
    except aiohttp.ClientError as exc:
        result.error = f"{type(exc).__name__}: {exc}"


async def replay(
    url: str,
    workload: Sequence[Request],
    *,
    model: str | None = None,
    token_range: tuple[int, int] = (100, 10_000),
    repeat_token: bool = False,
    seed: int = 0,
    request_timeout: float = 600.0,
    max_concurrency: int | None = None,
    warmup: int = 2,
    progress: bool = True,
    desc: str = "bench",
    itl: Reservoir | None = None,
    sampling: dict[str, float] | None = None,
) -> tuple[list[RequestResult], dict[str, float], float]:
    """Send every request at its arrival time (a conversation's turn: not before the previous
    answer arrived, see runtime/sim/conversations.py); returns (results, counter deltas,
    seconds).

    Bounded: one request per workload entry, each within `request_timeout` seconds, at
    most `max_concurrency` in flight (None: as many as arrive, over up to 512
    connections). `warmup` requests (the longest prompt of the workload, up to 256
    tokens; 4 output tokens) run first, before the server's counters are read. `itl`
    collects the measured requests' inter-token gaps. `sampling`: see `request_body`.
    """
    from tqdm import tqdm

    url = check_local_url(url)
    rng = np.random.default_rng([seed, 3])
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    connector = aiohttp.TCPConnector(limit=max_concurrency or 512)
    in_flight = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        model = model or await served_model(session, url)
        longest = min(256, max((r.prompt_len for r in workload), default=1))
        warm = prompt_ids(longest, np.random.default_rng(0), token_range, repeat_token)
        await warm_up(session, url, [request_body(model, warm, 4)] * warmup, request_timeout)
        await wait_idle(session, url)
        before = scheduler_counters(await get_metrics(session, url))
        results = [
            RequestResult(i, r.prompt_len, r.output_len, r.arrival) for i, r in enumerate(workload)
        ]
        ids = prompt_token_ids(workload, rng, token_range, repeat_token, seed)
        bodies = [
            request_body(model, p, r.output_len, sampling)
            for p, r in zip(ids, workload, strict=True)
        ]
        bar = tqdm(total=len(results), desc=desc, unit="req", disable=not progress)
        answered = [asyncio.Event() for _ in results]  # a conversation's next turn waits

        async def tracked(body: dict[str, Any], result: RequestResult) -> None:
            try:
                after = workload[result.index].after
                if after >= 0:
                    await answered[after].wait()
                await _one(session, url, body, result, t0, request_timeout, itl, in_flight)
            finally:
                answered[result.index].set()
            bar.update(1)
            if result.error:
                bar.set_postfix(errors=sum(1 for x in results if x.error))

        t0 = time.perf_counter()
        await asyncio.gather(*(tracked(b, r) for b, r in zip(bodies, results, strict=True)))
        elapsed = time.perf_counter() - t0
        bar.close()
        await wait_idle(session, url)
        after = scheduler_counters(await get_metrics(session, url))
    return results, counter_delta(before, after), elapsed
