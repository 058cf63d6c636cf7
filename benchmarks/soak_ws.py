"""The soak test's websocket clients: a few shared connections multiplexing requests by
id (the endpoint's main use), plus dedicated connections for disconnects and hostile
messages, whose replies cannot be routed by id."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import aiohttp

from fastserve.benchmarks.soak_plan import Job, Outcome, check_end, status_outcome

HOSTILE_WAIT_S = 60.0  # a hostile message that is a valid request runs to its end


class _Conn:
    """One websocket and the queues of the requests it carries."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                queue = self.queues.get(str(frame.get("id")))
                if queue is not None:
                    queue.put_nowait(frame)
        finally:  # the socket closed under its requests: each gets an error frame
            gone = {"type": "error", "error": {"message": "websocket closed"}}
            for queue in self.queues.values():
                queue.put_nowait(gone)


class WsMux:
    """`n` shared connections, requests spread round-robin."""

    def __init__(self, session: aiohttp.ClientSession, url: str, n: int) -> None:
        self._session, self._url, self._n = session, url, n
        self._conns: list[_Conn] = []
        self._next = itertools.count()

    async def start(self) -> None:
        for _ in range(self._n):
            self._conns.append(_Conn(await self._session.ws_connect(self._url + "/v1/ws")))

    async def close(self) -> None:
        for conn in self._conns:
            await conn.ws.close()
            await asyncio.gather(conn.reader, return_exceptions=True)

    async def request(self, job: Job) -> Outcome:
        conn = self._conns[next(self._next) % len(self._conns)]
        cid = f"s{job.index}"
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        conn.queues[cid] = queue
        try:
            await conn.ws.send_json({"id": cid, "type": job.kind, "body": job.body})
            aborted = False
            if job.cut and job.cut_after == 0:
                await conn.ws.send_json({"id": cid, "type": "abort"})
                aborted = True
            deltas = 0
            while True:
                frame = await queue.get()
                if frame["type"] == "delta":
                    deltas += 1
                    if job.cut and not aborted and deltas >= job.cut_after:
                        await conn.ws.send_json({"id": cid, "type": "abort"})
                        aborted = True
                elif frame["type"] == "done":
                    if job.cut:
                        return Outcome("cut")  # "abort", or it finished first: both fine
                    usage = frame.get("usage") or {}
                    return check_end(job, frame["finish_reason"], usage.get("completion_tokens"))
                else:
                    return _error_outcome(frame, hostile=False)
        finally:
            conn.queues.pop(cid, None)


def _error_outcome(frame: dict[str, Any], hostile: bool) -> Outcome:
    error = frame.get("error") or {}
    # Request errors carry an HTTP-style status; failures of running requests do not.
    status = frame.get("status") or (500 if error.get("type") == "server_error" else 0)
    return status_outcome(int(status), hostile, str(error.get("message"))[:200])


async def ws_dedicated(session: aiohttp.ClientSession, url: str, job: Job) -> Outcome:
    """A connection of its own, closed after `cut_after` deltas: the server must abort
    what the connection was running."""
    async with session.ws_connect(url + "/v1/ws") as ws:
        await ws.send_json({"id": 1, "type": job.kind, "body": job.body})
        deltas = 0
        while deltas < job.cut_after:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "delta":
                deltas += 1
            elif frame["type"] == "error":
                return _error_outcome(frame, hostile=False)
            else:
                break  # done before the cut point
    return Outcome("cut")


async def ws_hostile(session: aiohttp.ClientSession, url: str, text: str) -> Outcome:
    """Send one hostile message; the first terminal frame (any id) is the answer."""
    async with session.ws_connect(url + "/v1/ws") as ws:
        await ws.send_str(text)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOSTILE_WAIT_S):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    frame = json.loads(msg.data)
                    if frame.get("type") == "done":
                        return Outcome("ok")  # a valid request after all: it ran and ended
                    if frame.get("type") == "error":
                        return _error_outcome(frame, hostile=True)
    return Outcome("refused")  # closed or timed out: closing aborted whatever ran
