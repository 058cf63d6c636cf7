"""A stand-in for the scheduler process in frontend tests (the frontend is what is tested).

It records what the frontend sends and answers each SubmitRequest with the RequestOutputs
that a subclass's `outputs(req, prompt)` yields, one OutputBatch every `interval` seconds,
until an output carries a finish reason or the request is aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastserve.protocol.codec import Codec
from fastserve.protocol.to_frontend import OutputBatch, RequestOutput
from fastserve.protocol.to_scheduler import AbortRequest, SubmitRequest
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.tokenizer import ModelTokenizer


class FakeScheduler:
    """Base class: subclasses define `outputs`."""

    interval = 0.002  # seconds between OutputBatch messages

    def __init__(self, tok: ModelTokenizer) -> None:
        self.tok = tok
        self.service: FrontendService | None = None
        self.submitted: list[SubmitRequest] = []
        self.aborts: list[AbortRequest] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._codec = Codec()

    def send(self, msg: object) -> None:
        # Through the codec, as over the real ZeroMQ transport: a value the wire cannot
        # carry (say, an integer past 64 bits) fails here instead of passing unnoticed.
        msg = self._codec.decode(self._codec.encode(msg)).message
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
        assert self.service is not None
        prompt = self.tok.decode(req.prompt_ids)
        for tick, out in enumerate(self.outputs(req, prompt), 1):
            await asyncio.sleep(self.interval)
            if self.aborted(req.request_id):
                return
            out.num_prompt_tokens = len(req.prompt_ids)
            await self.service.on_message(OutputBatch(tick, [out]))
            if out.finish_reason:
                return


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
