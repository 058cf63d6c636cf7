"""The soak test's clients: one coroutine per channel, each running one Job to an Outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import zmq

from fastserve.benchmarks.soak_plan import Job, Outcome, check_end, status_outcome
from fastserve.benchmarks.soak_ws import WsMux, ws_dedicated, ws_hostile
from fastserve.runtime.client import FastServeClient, FastServeError
from tests.fuzz_cases import HttpCase

PATHS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


class SoakClients:
    """Shared connections (HTTP session, websockets, a ZeroMQ client, a raw DEALER)."""

    def __init__(self, url: str, zmq_address: str, ws_connections: int = 4) -> None:
        self.url, self.zmq_address = url, zmq_address
        self._ws_connections = ws_connections

    async def __aenter__(self) -> SoakClients:
        connector = aiohttp.TCPConnector(limit=0)  # concurrency is bounded by the caller
        self.session = aiohttp.ClientSession(connector=connector)
        self.ws = WsMux(self.session, self.url, self._ws_connections)
        await self.ws.start()
        self.zmq = FastServeClient(self.zmq_address)
        await self.zmq.connect()
        # A plain (blocking-API) socket used only with NOBLOCK: garbage needs no futures.
        self._zctx = zmq.Context()
        self._raw = self._zctx.socket(zmq.DEALER)
        self._raw.setsockopt(zmq.LINGER, 0)
        self._raw.connect(self.zmq_address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.zmq.close()
        self._raw.close(0)
        self._zctx.term()
        await self.session.close()

    async def run(self, job: Job) -> Outcome:
        if job.channel == "http":
            return await (self._http_hostile(job) if job.hostile else self._http(job))
        if job.channel == "sse":
            return await (self._http_hostile(job) if job.hostile else self._sse(job))
        if job.channel == "ws":
            if job.hostile:
                assert isinstance(job.hostile, str)
                return await ws_hostile(self.session, self.url, job.hostile)
            if job.cut == "disconnect":
                return await ws_dedicated(self.session, self.url, job)
            return await self.ws.request(job)
        if job.hostile:
            return await self._zmq_hostile(job)
        return await self._zmq(job)

    # -- HTTP ---------------------------------------------------------------------------

    async def _post(self, job: Job) -> tuple[int, Any]:
        async with self.session.post(self.url + PATHS[job.kind], json=job.body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def _http(self, job: Job) -> Outcome:
        task = asyncio.create_task(self._post(job))
        if job.cut:
            # HTTP has no abort message: both cuts hang up, the server must notice.
            done, _ = await asyncio.wait({task}, timeout=job.cut_delay_s)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return Outcome("cut")
        status, body = await task
        if status != 200:
            return status_outcome(status, False, json.dumps(body)[:200])
        usage = body.get("usage") or {}
        return check_end(job, body["choices"][0]["finish_reason"], usage.get("completion_tokens"))

    async def _sse(self, job: Job) -> Outcome:
        deltas, finish, done = 0, None, False
        async with self.session.post(self.url + PATHS[job.kind], json=job.body) as resp:
            if resp.status != 200:
                return status_outcome(resp.status, False, await resp.text())
            if job.cut and job.cut_after == 0:
                resp.close()  # hang up at once (the headers came with the first token)
                return Outcome("cut")
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Outcome("error", str(chunk["error"])[:200])
                choice = chunk["choices"][0] if chunk.get("choices") else {}
                finish = choice.get("finish_reason") or finish
                if choice and not choice.get("finish_reason"):
                    deltas += 1
                if job.cut and deltas >= job.cut_after:
                    resp.close()
                    return Outcome("cut")
        if job.cut:
            return Outcome("cut")  # it ended before the cut point: fine either way
        return check_end(job, finish, None) if done else Outcome("error", "no [DONE]")

    async def _http_hostile(self, job: Job) -> Outcome:
        case = job.hostile
        assert isinstance(case, HttpCase)
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        async with self.session.post(self.url + case.path, data=case.body, headers=headers) as r:
            text = await r.text(errors="replace")  # a valid streamed request runs to its end
            return status_outcome(r.status, True, text)

    # -- ZeroMQ -------------------------------------------------------------------------

    async def _zmq(self, job: Job) -> Outcome:
        try:
            if job.cut == "disconnect":
                return await self._zmq_disconnect(job)
            if job.cut:
                return await self._zmq_abort(job)
            result = await self.zmq.complete(job.kind, job.body)
        except FastServeError as exc:
            return status_outcome(exc.status or 500, False, str(exc))
        return check_end(job, result.finish_reason, result.usage.completion_tokens)

    async def _zmq_abort(self, job: Job) -> Outcome:
        if job.cut_after == 0:  # before any token: cancelling `complete` aborts the request
            task = asyncio.create_task(self.zmq.complete(job.kind, job.body))
            await asyncio.wait({task}, timeout=job.cut_delay_s)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return Outcome("cut")
        deltas = 0
        async with self.zmq.stream(job.kind, job.body) as stream:
            async for _ in stream:
                deltas += 1
                if deltas >= job.cut_after:
                    break  # leaving the `async with` aborts it on the server
        return Outcome("cut")

    async def _zmq_disconnect(self, job: Job) -> Outcome:
        """A client of its own that goes away part-way (closing aborts what it runs)."""
        own = FastServeClient(self.zmq_address)
        await own.connect()
        try:
            deltas = 0
            stream = own.stream(job.kind, job.body)
            async for _ in stream:
                deltas += 1
                if deltas >= job.cut_after:
                    break
        finally:
            await own.close()
        return Outcome("cut")

    async def _zmq_hostile(self, job: Job) -> Outcome:
        """Garbage frames on a raw DEALER. The endpoint answers what it can route and
        drops the rest; /health and the final checks tell whether it survived."""
        assert isinstance(job.hostile, list)
        with contextlib.suppress(zmq.Again):
            self._raw.send_multipart(job.hostile, flags=zmq.NOBLOCK)
        with contextlib.suppress(zmq.Again):
            while True:  # replies nobody reads would pile up to the high-water mark
                self._raw.recv_multipart(flags=zmq.NOBLOCK)
        return Outcome("refused")
