"""FrontendService: the frontend's logic, independent of ZeroMQ.

The transport gives it a `send` callable (protocol message -> scheduler); the frontend
actor's dispatch calls `handle_output_batch` with each OutputBatch from the scheduler. Consumers (HTTP handlers, websocket
sessions) call `parse`, then `submit`, then iterate the returned RequestHandle's events.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_frontend import OutputBatch
from fastserve.protocol.to_scheduler import AbortRequest, SubmitRequest
from fastserve.runtime.frontend.admission import AdmissionControl
from fastserve.runtime.frontend.errors import RequestError, service_unavailable
from fastserve.runtime.frontend.events import Event, Failed, Finished
from fastserve.runtime.frontend.handle import RequestHandle, sibling_sampling
from fastserve.runtime.frontend.inflight import InflightRequest
from fastserve.runtime.frontend.metrics import FrontendMetrics
from fastserve.runtime.frontend.openai_schema import ParsedRequest, ServerLimits, parse_request
from fastserve.runtime.frontend.options import FrontendOptions
from fastserve.runtime.frontend.tokenizer import ModelTokenizer

__all__ = ["FrontendService", "RequestHandle"]

Send = Callable[[object], Awaitable[None] | None]
# Retry-After while the engine restarts: a restart of a small model takes a few seconds.
ENGINE_RESTART_RETRY_S = 2
_log = structlog.get_logger(actor="frontend")  # lazy: honours a later structlog.configure


class FrontendService:
    def __init__(
        self,
        send: Send,
        *,
        model_dir: str | Path | None = None,
        served_model_name: str | None = None,
        max_model_len: int | None = None,
        default_max_tokens: int = 512,
        request_id_prefix: str = "req-",
        tokenizer: ModelTokenizer | None = None,
        ready: bool = True,
        options: FrontendOptions | None = None,
    ) -> None:
        if tokenizer is None:
            if model_dir is None:
                raise ValueError("FrontendService needs model_dir or tokenizer")
            tokenizer = ModelTokenizer.from_dir(model_dir)
        context = max_model_len or tokenizer.max_model_len
        if not context:
            raise ValueError(
                "max_model_len is not given and config.json has no max_position_embeddings"
            )
        name = served_model_name or (Path(model_dir).name if model_dir else "model")
        self.tokenizer = tokenizer
        self.limits = ServerLimits(name, context, default_max_tokens)
        self.metrics = FrontendMetrics()
        self.ready = ready  # /health answers 200 only when True
        self.options = options or FrontendOptions()
        self.admission = AdmissionControl(
            self.options.max_queued_requests,
            self.options.max_queued_tokens,
            self.options.cost_model,
            self.options.max_batch_jobs,
        )
        self.draining = False  # SIGTERM: finish what runs, accept nothing new
        self.restarting = False  # the engine behind us died and is being restarted
        self.reserved_tokens = 0  # prompt + max_tokens of every unfinished request
        self._idle = asyncio.Event()  # set whenever no request is unfinished
        self._idle.set()
        self.created = int(time.time())
        self._send_fn = send
        self._prefix = request_id_prefix
        self._ids = itertools.count(1)
        self._requests: dict[str, InflightRequest] = {}

    # -- used by the transport ----------------------------------------------------------

    async def handle_output_batch(self, batch: OutputBatch) -> None:
        work = 0  # prompt tokens processed + tokens generated: the throughput measured
        for out in batch.outputs:
            inflight = self._requests.get(out.request_id)
            if inflight is None:
                continue  # ended here already (stop string, client gone): late tokens
            had_token = inflight.first_token_at is not None
            work += len(out.token_ids) + (0 if had_token else len(inflight.parsed.prompt_ids))
            previous = inflight.last_token_at
            outcome = inflight.consume(out)
            if out.token_ids:
                last = inflight.last_token_at
                gap = None if previous is None or last is None else last - previous
                self.metrics.observe_tokens(len(out.token_ids), gap)
            if not had_token and inflight.first_token_at is not None:
                ttft = inflight.first_token_at - inflight.arrival
                self.metrics.observe_first_token(ttft)
                inflight.log.info("request.first_token", ttft_s=round(ttft, 6), tick=batch.tick)
            for event in outcome.events:
                inflight.queue.put_nowait(event)
            if outcome.ended:
                self._end(inflight, outcome.events[-1])
            if outcome.abort_scheduler:
                await self._send(AbortRequest(inflight.request_id, reason="stop"))
        self.admission.meter.record(time.monotonic(), work)

    async def fail_all(self, message: str) -> None:
        """The scheduler is gone: end every request with a server error."""
        for inflight in list(self._requests.values()):
            event = Failed(message, inflight.usage())
            inflight.queue.put_nowait(event)
            self._end(inflight, event)

    # -- used by the HTTP and websocket handlers ----------------------------------------

    def parse(self, kind: str, body: Any, *, choices: bool = True) -> ParsedRequest:
        """Validate a request body; raise RequestError (counted as rejected) when invalid.
        choices=False: the transport streams one choice per request (n must be 1)."""
        try:
            self.check_accepting()
            parsed = parse_request(kind, body, self.tokenizer, self.limits)
            if not choices and parsed.best_of > 1:
                raise RequestError(
                    "`n` and `best_of` > 1 are served over HTTP (/v1/completions, "
                    "/v1/chat/completions): send one request per choice here",
                    param="n",
                )
            self.admission.check_tokens(
                self.reserved_tokens,
                _cost(parsed) * parsed.best_of,
                len(self._requests),
                self._backlog,
            )
            return parsed
        except RequestError as exc:
            self.count_rejection(exc)
            raise

    def precheck(self) -> None:
        """What `parse` checks first, for transports that can refuse before decoding."""
        try:
            self.check_accepting()
        except RequestError as exc:
            self.count_rejection(exc)
            raise

    def count_rejection(self, exc: RequestError) -> None:
        self.metrics.count_rejection(exc.status)
        _log.info("request.rejected", status=exc.status, message=exc.message)

    def check_accepting(self) -> None:
        """Cheap checks before a body is even decoded: ready, not draining, room left."""
        if not self.ready:
            raise service_unavailable("the server is not ready")
        if self.draining:
            raise service_unavailable("the server is shutting down: send the request elsewhere")
        if self.restarting:
            raise service_unavailable(
                "the engine is restarting after a failure: retry shortly",
                code="engine_restarting",
                retry_after=ENGINE_RESTART_RETRY_S,
            )
        self.admission.check_count(len(self._requests), self._backlog)

    def start_draining(self) -> None:
        """Refuse new requests from now on (503); those in flight run to their end."""
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every request has ended; False if some still run after `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def submit(self, parsed: ParsedRequest) -> RequestHandle:
        """Queue a request: one job per choice (best_of of them), each sampling on its own.
        The scheduler sees siblings as independent jobs with the same prompt."""
        base = f"{self._prefix}{next(self._ids)}"
        queue: asyncio.Queue[Event] = asyncio.Queue()
        count = parsed.best_of
        choices = [
            InflightRequest(
                base if count == 1 else f"{base}.{i}",
                parsed,
                self.tokenizer,
                index=i,
                queue=queue,
            )
            for i in range(count)
        ]
        for i, inflight in enumerate(choices):
            try:
                await self._submit_one(inflight, sibling_sampling(parsed.sampling, i))
            except Exception:
                for sent in choices[:i]:
                    await self.abort(sent.request_id)
                raise
        return RequestHandle(self, base, choices)

    async def _submit_one(self, inflight: InflightRequest, sampling: SamplingParams) -> None:
        parsed = inflight.parsed
        self._requests[inflight.request_id] = inflight
        self.reserved_tokens += _cost(parsed)
        self._idle.clear()
        self.metrics.count_received(len(parsed.prompt_ids))
        inflight.log.info(
            "request.arrived",
            kind=parsed.kind,
            prompt_tokens=len(parsed.prompt_ids),
            max_tokens=parsed.sampling.max_tokens,
            stream=parsed.stream,
            choice=inflight.index,
        )
        msg = SubmitRequest(
            inflight.request_id,
            parsed.prompt_ids,
            sampling,
            inflight.arrival_wall,
            parsed.priority,
        )
        try:
            await self._send(msg)
        except Exception:
            self._forget(inflight)
            inflight.ended = True
            inflight.log.exception("request.submit_failed")
            raise

    async def abort(self, request_id: str, reason: str = "abort") -> None:
        """End a request here and tell the scheduler to stop it (client gone or abort)."""
        inflight = self._requests.get(request_id)
        if inflight is None:
            return
        event = Finished("abort", inflight.usage())
        inflight.queue.put_nowait(event)  # wakes a consumer still waiting for tokens
        self._end(inflight, event)
        await self._send(AbortRequest(request_id, reason=reason))

    @property
    def num_running(self) -> int:
        return len(self._requests)

    def metrics_text(self) -> str:
        return self.metrics.render(self.num_running)

    def build_app(self) -> web.Application:
        from fastserve.runtime.frontend.app import build_app

        return build_app(self)

    # -- internals ----------------------------------------------------------------------

    async def _send(self, msg: object) -> None:
        result = self._send_fn(msg)
        if inspect.isawaitable(result):
            await result

    def _backlog(self) -> list[tuple[int, int]]:
        """(prompt tokens not processed yet, tokens still to generate) per unfinished request."""
        return [
            (
                len(r.parsed.prompt_ids) if r.first_token_at is None else 0,
                max(0, r.parsed.sampling.max_tokens - r.num_generated),
            )
            for r in self._requests.values()
        ]

    def _forget(self, inflight: InflightRequest) -> None:
        if self._requests.pop(inflight.request_id, None) is not None:
            self.reserved_tokens -= _cost(inflight.parsed)
        if not self._requests:
            self._idle.set()

    def _end(self, inflight: InflightRequest, event: Event) -> None:
        inflight.ended = True
        self._forget(inflight)
        now = time.monotonic()
        jct = now - inflight.arrival
        ttft = (
            None if inflight.first_token_at is None else inflight.first_token_at - inflight.arrival
        )
        n = inflight.num_generated
        tpot = None
        if inflight.first_token_at is not None and n > 1:
            tpot = (now - inflight.first_token_at) / (n - 1)
        fields = {
            "prompt_tokens": len(inflight.parsed.prompt_ids),
            "completion_tokens": n,
            "jct_s": round(jct, 6),
            "ttft_s": None if ttft is None else round(ttft, 6),
            "tpot_s": None if tpot is None else round(tpot, 6),
        }
        if isinstance(event, Failed):
            self.metrics.count_failed()
            inflight.log.warning("request.failed", error=event.message, **fields)
            return
        reason = event.finish_reason if isinstance(event, Finished) else "unknown"
        self.metrics.count_finished(reason, jct, tpot)
        inflight.log.info("request.finished", finish_reason=reason, **fields)


def _cost(parsed: ParsedRequest) -> int:
    """What one job of a request may cost at most, in tokens: what the token bound counts."""
    return len(parsed.prompt_ids) + parsed.sampling.max_tokens
