"""A stand-in for the scheduler process in frontend tests (the frontend is what is tested).

It records what the frontend sends and answers each SubmitRequest with the RequestOutputs
that a subclass's `outputs(req, prompt)` yields, one OutputBatch every `interval` seconds,
until an output carries a finish reason or the request is aborted.

Both directions go through the real transport: the frontend's messages are encoded into
this fake's `MemoryInbox`, and its OutputBatches are encoded into a frontend actor's inbox
and dispatched by that actor's loop, as in the server (only the sockets are in memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastserve.actors.frontend import FrontendActor
from fastserve.protocol.to_frontend import OutputBatch, RequestOutput
from fastserve.protocol.to_scheduler import AbortRequest, SubmitRequest
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from fastserve.runtime.transport import MemoryInbox, MemoryOutbox


class FakeScheduler:
    """Base class: subclasses define `outputs`. Pass `send` to the FrontendService and set
    `service`; the outputs reach that service through a frontend actor (see `output_to`)."""

    interval = 0.002  # seconds between OutputBatch messages

    def __init__(self, tok: ModelTokenizer) -> None:
        self.tok = tok
        self.service: FrontendService | None = None
        self.submitted: list[SubmitRequest] = []
        self.aborts: list[AbortRequest] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.inbox = MemoryInbox()  # the scheduler's: what the frontend sends lands here
        self._from_frontend = MemoryOutbox(self.inbox)  # the frontend's outbox to it
        self._to_frontend: MemoryOutbox | None = None
        self._frontend: asyncio.Task[None] | None = None  # the actor run for `service`

    def output_to(self, frontend_inbox: MemoryInbox) -> None:
        """Send the outputs to the inbox of a frontend actor the test runs itself (without
        this, the first output starts an actor of its own for `service`)."""
        self._to_frontend = MemoryOutbox(frontend_inbox)

    async def send(self, msg: object) -> None:
        """The service's `send`. Encoded, as over ZeroMQ: a value the wire cannot carry
        (say, an integer past 64 bits) fails here instead of passing unnoticed."""
        await self._from_frontend.send(msg)
        for received in self.inbox.drain():
            self._receive(received)

    def _receive(self, msg: object) -> None:
        if isinstance(msg, SubmitRequest):
            self.submitted.append(msg)
            task = asyncio.get_running_loop().create_task(self._answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(msg, AbortRequest):
            self.aborts.append(msg)

    def aborted(self, request_id: str) -> bool:
        return any(a.request_id == request_id for a in self.aborts)

    def outputs(self, req: SubmitRequest, prompt: str) -> Iterator[RequestOutput]:
        raise NotImplementedError

    async def _answer(self, req: SubmitRequest) -> None:
        prompt = self.tok.decode(req.prompt_ids)
        for tick, out in enumerate(self.outputs(req, prompt), 1):
            await asyncio.sleep(self.interval)
            if self.aborted(req.request_id):
                return
            out.num_prompt_tokens = len(req.prompt_ids)
            await self._output(OutputBatch(tick, [out]))
            if out.finish_reason:
                return

    async def _output(self, batch: OutputBatch) -> None:
        if self._to_frontend is None:
            assert self.service is not None, "set the fake's service before requests come"
            inbox = MemoryInbox()
            # The actor's loop only: the test serves the service's HTTP app itself, so the
            # actor is never started (no port of its own). Cancelled with the test's loop.
            actor = FrontendActor(inbox, self.service, "127.0.0.1", 0)
            self._frontend = asyncio.get_running_loop().create_task(actor.run())
            self._to_frontend = MemoryOutbox(inbox)
        await self._to_frontend.send(batch)


async def wait_for(predicate, timeout: float = 3.0) -> None:
    """Poll `predicate` (e.g. what the fake has received) until it holds; fail after `timeout`."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def reply_for(prompt_text: str) -> str:
    """Each prompt gets its own reply, so crossed streams would show."""
    return f"[{prompt_text[-6:]}] héllo 🙂"


class EchoScheduler(FakeScheduler):
    """Replies with reply_for(prompt), one token per batch, then "stop" (or "length").

    A prompt containing HANG repeats tokens until aborted or out of max_tokens; one
    containing FAIL fails after its first token.
    """

    def outputs(self, req: SubmitRequest, prompt: str) -> Iterator[RequestOutput]:
        reply = self.tok.encode(reply_for(prompt))
        i = 0
        while True:
            i += 1
            out = RequestOutput(req.request_id, [reply[(i - 1) % len(reply)]])
            if "FAIL" in prompt and i == 2:
                out.token_ids, out.finish_reason, out.error = [], "error", "worker exploded"
            elif i == req.sampling.max_tokens:
                out.finish_reason = "length"
            elif i == len(reply) and "HANG" not in prompt:
                out.finish_reason = "stop"
            yield out
