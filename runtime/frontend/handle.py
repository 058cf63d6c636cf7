"""A submitted request as its consumer sees it (RequestHandle), and how its sibling jobs
differ when it asked for several choices."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Protocol

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.frontend.events import Event, Failed, Finished, Usage
from fastserve.runtime.frontend.inflight import InflightRequest
from fastserve.runtime.frontend.request_fields import INT64_MIN


class Aborter(Protocol):
    async def abort(self, request_id: str, reason: str = "abort") -> None: ...


class RequestHandle:
    """A submitted request as its consumer sees it: an id and one stream of events for all
    its choices (each a job of its own; see events.py for the order)."""

    def __init__(self, service: Aborter, request_id: str, choices: list[InflightRequest]) -> None:
        self._service = service
        self.choices = choices
        self._queue = choices[0].queue  # shared by the siblings
        self.request_id = request_id  # the request's (choice i's job is request_id.i)
        self.parsed = choices[0].parsed
        self.arrival_wall = choices[0].arrival_wall
        self.done = False  # the terminal event of the request was delivered
        self._open = len(choices)  # choices not finished yet

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.done:
            event = await self._queue.get()
            if isinstance(event, Failed):
                self.done = True  # one failed choice fails the request
            elif isinstance(event, Finished):
                self._open -= 1
                self.done = self._open == 0
            yield event

    def usage(self) -> Usage:
        """The request's usage: the prompt once, every choice's completion tokens."""
        prompt = len(self.parsed.prompt_ids)
        return Usage(prompt, sum(c.usage().completion_tokens for c in self.choices))

    async def cancel(self) -> None:
        """The consumer is gone (client disconnect, abort): stop the choices still running."""
        for inflight in self.choices:
            if not inflight.ended:
                await self._service.abort(inflight.request_id)


def sibling_sampling(sampling: SamplingParams, index: int) -> SamplingParams:
    """Choice i of a request: its own seed (seed + i, wrapped to 64 bits) so that seeded
    siblings differ and each is reproducible."""
    if index == 0 or sampling.seed is None:
        return sampling
    seed = (sampling.seed + index - INT64_MIN) % 2**64 + INT64_MIN
    return dataclasses.replace(sampling, seed=seed)
