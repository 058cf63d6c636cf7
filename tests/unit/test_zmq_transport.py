"""The ZeroMQ publisher outbox: ready only once its subscribers hear it."""

from __future__ import annotations

import asyncio

import zmq.asyncio

from fastserve.protocol.control import EngineUp
from fastserve.runtime.zmq_transport import ZmqInbox, ZmqOutbox


def test_a_subscriber_that_connected_before_the_bind_hears_the_first_message(tmp_path):
    address = f"ipc://{tmp_path}/ticks"

    async def scenario() -> tuple[list, object]:
        ctx = zmq.asyncio.Context()
        try:
            # Connected before anyone binds (the restart case): zmq retries the connect.
            subscribers = [ZmqInbox(ctx, address, "sub") for _ in range(2)]
            await asyncio.sleep(0.05)
            pub = ZmqOutbox(ctx, address, "pub")
            await asyncio.wait_for(pub.wait_for_subscribers(2), 10)
            await pub.send(EngineUp(7))  # at once: a PUB would drop this unheard
            heard = [await asyncio.wait_for(s.recv(), 5) for s in subscribers]
            late = ZmqOutbox(ctx, f"ipc://{tmp_path}/nobody", "pub")
            waited = asyncio.wait_for(late.wait_for_subscribers(1), 0.3)
            try:
                await waited
                outcome: object = "returned"
            except TimeoutError:
                outcome = "still waiting"
            for sock in (pub, late, *subscribers):
                sock.close()
            return heard, outcome
        finally:
            ctx.destroy(linger=0)

    heard, outcome = asyncio.run(scenario())
    assert [m.generation for m in heard] == [7, 7]
    assert outcome == "still waiting"  # no subscriber: it does not pretend one joined
