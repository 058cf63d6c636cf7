"""The launches' heartbeat (deploy/launch.py): codec messages over loopback, a node that
says it is down fails its peers, and a frame of other code is refused rather than parsed.

The failure path of a running heartbeat SIGTERMs its own process, so failures are checked
on the frame handler of a heartbeat that is never started."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastserve.deploy.cluster import ClusterSpec, Node
from fastserve.deploy.launch import Heartbeat
from fastserve.protocol.codec import Codec
from fastserve.protocol.control import NodeAlive, NodeDown
from tests.server_harness import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spec() -> ClusterSpec:
    ports = {name: free_port() for name in ("heartbeat", "heartbeat_in")}
    spec = ClusterSpec([Node(workers=1), Node(workers=1)], pp=2)
    spec.ports.update(ports)
    return spec


@pytest.fixture
def idle(spec: ClusterSpec) -> Iterator[Heartbeat]:
    """Node 1's heartbeat, not started: only its frame handler runs."""
    beat = Heartbeat(spec, 1, 10.0)
    yield beat
    beat._ctx.term()


def test_two_nodes_hear_each_other_ready(spec: ClusterSpec) -> None:
    hub, peer = Heartbeat(spec, 0, 10.0), Heartbeat(spec, 1, 10.0)
    hub.start()
    peer.start()
    try:
        peer.ready.set()
        assert hub.all_ready.wait(10)  # node 0 heard node 1's NodeAlive(ready=True)
    finally:
        peer.stop()
        hub.stop()
    assert hub.failure is None and peer.failure is None


def test_a_node_down_fails_the_others(idle: Heartbeat) -> None:
    codec, seen, ready = Codec(), {}, set()
    idle._on_frame(codec.encode(NodeAlive(0, False)), seen, ready)
    assert 0 in seen and ready == set() and idle.failure is None
    idle._on_frame(codec.encode(NodeAlive(1, True)), seen, ready)  # its own beat: ignored
    idle._on_frame(codec.encode(NodeAlive(0, True)), seen, ready)
    assert ready == {0} and idle.failure is None
    idle._on_frame(codec.encode(NodeDown(0, "worker-2 exited")), seen, ready)
    assert idle.failure == "node 0 failed: worker-2 exited"


def test_a_frame_of_other_code_is_a_failure(idle: Heartbeat) -> None:
    idle._on_frame(b"alive 0 ready", {}, set())  # the text beats of protocol 5
    assert idle.failure is not None and "not this protocol" in idle.failure
