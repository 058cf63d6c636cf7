"""The frontend under fuzzing: the aiohttp app and the ZeroMQ endpoint in front of the fake
scheduler, plus one runner per door that reports what a case did.

A "crash" is anything but a clean answer: an HTTP 5xx, a codec error other than
ProtocolError, a ZeroMQ reply with a 5xx status, or an internal error counted by the
service (its handlers caught an exception they did not expect).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path

import zmq
import zmq.asyncio
from aiohttp.test_utils import TestClient, TestServer

from fastserve.protocol.client import ClientDone, ClientError, ClientSubmit
from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from fastserve.runtime.frontend.zmq_endpoint import ZmqClientEndpoint
from tests.model_fixtures import write_tiny_model

from .fake_scheduler import EchoScheduler
from .fuzz_cases import HttpCase

REPLY_TIMEOUT_S = 10.0


class FuzzTarget:
    """Start with `await target.start()`, stop with `await target.stop()`."""

    def __init__(self, tokenizer: ModelTokenizer | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="fastserve-fuzz-")
        root = Path(self._tmp.name)
        self.tok = tokenizer or ModelTokenizer.from_dir(write_tiny_model(root / "tiny"))
        self.fake = EchoScheduler(self.tok)
        self.fake.interval = 0.0  # answer as fast as the loop allows: more cases per second
        self.service = FrontendService(
            self.fake.send, tokenizer=self.tok, served_model_name="tiny", default_max_tokens=8
        )
        self.fake.service = self.service
        self.endpoint = ZmqClientEndpoint(self.service, f"ipc://{root}/fuzz.sock")
        self.http: TestClient | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self.dealer: zmq.asyncio.Socket | None = None
        self._codec = Codec()
        self._sentinels = 0

    async def start(self) -> None:
        self.http = TestClient(TestServer(self.service.build_app()))
        await self.http.start_server()
        await self.endpoint.start()
        self._ctx = zmq.asyncio.Context()
        self.dealer = self._ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(self.endpoint.bound_address)

    async def stop(self) -> None:
        if self.dealer is not None:
            self.dealer.close()
        if self._ctx is not None:
            self._ctx.term()
        await self.endpoint.stop()
        if self.http is not None:
            await self.http.close()
        self._tmp.cleanup()

    @property
    def internal_errors(self) -> int:
        return self.service.metrics.internal_errors

    async def post(self, case: HttpCase) -> int:
        """The HTTP status of one case (its body read to the end)."""
        assert self.http is not None
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        async with self.http.post(case.path, data=case.body, headers=headers) as resp:
            await resp.read()
            return resp.status

    async def send_frames(self, batch: list[list[bytes]]) -> Counter[str]:
        """Send each multipart message, then a valid request: the endpoint must answer it
        (it kept serving). Counts the replies seen by kind and status class."""
        assert self.dealer is not None
        for frames in batch:
            await self.dealer.send_multipart(frames)
        self._sentinels += 1
        rid = f"sentinel-{self._sentinels}"
        body = json.dumps({"prompt": "ok", "max_tokens": 1})
        await self.dealer.send(self._codec.encode(ClientSubmit(rid, "completion", body)))
        seen: Counter[str] = Counter()
        while True:
            raw = await asyncio.wait_for(self.dealer.recv(), REPLY_TIMEOUT_S)
            reply = self._codec.decode(raw).message
            if isinstance(reply, ClientError):
                seen["5xx" if reply.status >= 500 else "4xx"] += 1
            else:
                seen[type(reply).__name__] += 1
            if isinstance(reply, ClientDone | ClientError) and reply.request_id == rid:
                if isinstance(reply, ClientError):
                    seen["sentinel_failed"] += 1
                return seen


def decode_outcome(codec: Codec, frame: bytes) -> str:
    """"decoded" or "protocol_error"; any other exception is a crash and propagates."""
    try:
        codec.decode(frame)
    except ProtocolError:
        return "protocol_error"
    return "decoded"
