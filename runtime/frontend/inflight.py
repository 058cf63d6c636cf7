"""One running request inside the frontend: its text pipeline and its event queue.

Scheduler outputs go in (`consume`), client events come out of `queue`. The pipeline is
token ids -> incremental detokenizer -> stop string matcher -> Delta events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from fastserve.protocol.to_frontend import RequestOutput
from fastserve.runtime.frontend.detokenizer import IncrementalDetokenizer
from fastserve.runtime.frontend.events import Delta, Event, Failed, Finished, Usage
from fastserve.runtime.frontend.openai_schema import ParsedRequest
from fastserve.runtime.frontend.stop_strings import StopStringMatcher
from fastserve.runtime.frontend.tokenizer import ModelTokenizer


@dataclass
class Outcome:
    """What one scheduler output did to the request."""

    events: list[Event] = field(default_factory=list)
    ended: bool = False  # no more events will follow
    abort_scheduler: bool = False  # a stop string ended it: the scheduler must stop generating


class InflightRequest:
    """One job: a request, or one choice of a request with n > 1 (siblings share `queue`)."""

    def __init__(
        self,
        request_id: str,
        parsed: ParsedRequest,
        tokenizer: ModelTokenizer,
        *,
        index: int = 0,
        queue: asyncio.Queue[Event] | None = None,
    ) -> None:
        self.request_id = request_id
        self.parsed = parsed
        self.index = index  # the choice it is
        self.queue: asyncio.Queue[Event] = asyncio.Queue() if queue is None else queue
        self.arrival_wall = time.time()
        self.arrival = time.monotonic()
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None  # for the gaps between tokens (ITL)
        self.num_generated = 0
        self.ended = False
        self.log = structlog.get_logger().bind(actor="frontend", request_id=request_id)
        self._detok = IncrementalDetokenizer(tokenizer.decode, parsed.prompt_ids)
        self._stops = StopStringMatcher(parsed.stop)

    def usage(self) -> Usage:
        return Usage(len(self.parsed.prompt_ids), self.num_generated)

    def consume(self, out: RequestOutput) -> Outcome:
        if out.error is not None or out.finish_reason == "error":
            return Outcome([Failed(out.error or "the request failed", self.usage())], ended=True)
        if out.token_ids:
            self.last_token_at = time.monotonic()
            if self.first_token_at is None:
                self.first_token_at = self.last_token_at
        finishing = out.finish_reason is not None
        if self.parsed.echo_only:
            # max_tokens 0: the scheduler generated one token to get the prompt computed.
            outcome = Outcome()
            if out.prompt_logprobs is not None:
                outcome.events.append(Delta("", prompt=out.prompt_logprobs, index=self.index))
            if finishing:
                outcome.events.append(Finished("length", self.usage(), self.index))
                outcome.ended = True
            return outcome
        self.num_generated += len(out.token_ids)
        text = self._detok.push(out.token_ids)
        if finishing:
            text += self._detok.flush()
        text, matched = self._stops.feed(text)
        if finishing and not matched:
            text += self._stops.flush()
        outcome = Outcome()
        if text or out.token_ids or out.prompt_logprobs is not None:
            outcome.events.append(
                Delta(
                    text,
                    list(out.token_ids),
                    list(out.logprobs),
                    list(out.top_ids),
                    list(out.top_logprobs),
                    out.prompt_logprobs,
                    self.index,
                )
            )
        if matched:
            outcome.events.append(Finished("stop", self.usage(), self.index))
            # Only a request the scheduler still runs needs telling.
            outcome.ended, outcome.abort_scheduler = True, not finishing
        elif finishing:
            outcome.events.append(Finished(str(out.finish_reason), self.usage(), self.index))
            outcome.ended = True
        return outcome
