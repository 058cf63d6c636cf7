"""`fastserve launch --config CLUSTER_FILE --node-rank N`: start and watch one node.

Each node's supervisor watches its own processes. Across nodes the launches keep a
heartbeat over ZeroMQ (node 0 is the hub): a node that fails says so at once, and a node
that goes silent for `heartbeat_timeout_s` counts as dead. Either way every other launch
tears its node down and exits non-zero, so no node lingers serving half a model.

Self-healing (restarting dead engine processes, see deploy/healing.py) applies to a
one-node cluster only: across nodes a restart would need every node to replace its
workers together and re-form the torch.distributed group, which is left to whatever
restarts the launches (systemd, Kubernetes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time

import zmq

from fastserve.deploy.cluster import ClusterError, ClusterSpec, node_children, node_config
from fastserve.deploy.healing import RestartPolicy
from fastserve.deploy.supervisor import ServerFailure, Supervisor
from fastserve.protocol.codec import Codec, ProtocolError
from fastserve.protocol.control import NodeAlive, NodeDown
from fastserve.runtime.logging import configure_logging, get_logger

_BEAT_S = 0.5


class Heartbeat(threading.Thread):
    """Liveness between this node's launch and the others' (node 0 hears and tells all)."""

    def __init__(self, spec: ClusterSpec, node_rank: int, startup_s: float) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.spec, self.node_rank = spec, node_rank
        self.startup_s = startup_s
        self.failure: str | None = None  # why a peer is considered dead
        self.ready = threading.Event()  # set once this node's processes are ready
        self.all_ready = threading.Event()  # node 0: every node said it is ready
        self._down: str | None = None  # this node's own failure, to announce
        self._halt = threading.Event()
        self._ctx = zmq.Context()
        self._codec = Codec()  # the beats are protocol messages: a peer of other code fails loudly
        self.log = get_logger()

    def announce_down(self, reason: str) -> None:
        self._down = reason
        self._send(NodeDown(self.node_rank, reason))
        time.sleep(2 * _BEAT_S)  # let it leave (and node 0 relay it) before we close

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def run(self) -> None:
        hub = self.node_rank == 0
        out = self._ctx.socket(zmq.PUB if hub else zmq.PUSH)
        inp = self._ctx.socket(zmq.PULL if hub else zmq.SUB)
        for s in (out, inp):
            s.setsockopt(zmq.LINGER, 500)
        if hub:
            out.bind(self.spec.tcp("heartbeat"))
            inp.bind(self.spec.tcp("heartbeat_in"))
        else:
            out.connect(self.spec.tcp("heartbeat_in"))
            inp.connect(self.spec.tcp("heartbeat"))
            inp.setsockopt(zmq.SUBSCRIBE, b"")
        self._out = out
        peers = [0] if not hub else list(range(1, len(self.spec.nodes)))
        started = time.monotonic()
        last_seen: dict[int, float] = {}
        ready: set[int] = set()
        next_beat = 0.0
        try:
            while not self._halt.is_set() and self.failure is None:
                now = time.monotonic()
                if now >= next_beat:
                    self._send(NodeAlive(self.node_rank, self.ready.is_set()))
                    next_beat = now + _BEAT_S
                if inp.poll(int(_BEAT_S * 1000 / 2)):
                    self._on_frame(inp.recv(), last_seen, ready)
                if hub and ready >= set(peers):
                    self.all_ready.set()
                self._check_silence(peers, last_seen, started)
        finally:
            if self.failure is not None:
                self.log.error("peer_failed", error=self.failure)
                if hub:  # tell the other nodes, then stop this node
                    self._send(NodeDown(0, self.failure))
                    time.sleep(2 * _BEAT_S)
                os.kill(os.getpid(), signal.SIGTERM)
            out.close()
            inp.close()
            self._ctx.term()

    def _send(self, message: NodeAlive | NodeDown) -> None:
        # A peer that cannot take it will time us out instead.
        with contextlib.suppress(zmq.ZMQError, AttributeError):
            self._out.send(self._codec.encode(message), zmq.NOBLOCK)

    def _on_frame(self, frame: bytes, last_seen: dict[int, float], ready: set[int]) -> None:
        try:
            message = self._codec.decode(frame).message
        except ProtocolError as exc:  # a launch of other code: the cluster cannot run together
            self.failure = f"a peer's heartbeat is not this protocol: {exc}"
            return
        if not isinstance(message, NodeAlive | NodeDown):
            self.failure = f"unexpected {type(message).__name__} on the heartbeat"
            return
        peer = message.node_rank
        if peer == self.node_rank:
            return
        last_seen[peer] = time.monotonic()
        if isinstance(message, NodeDown):
            self.failure = f"node {peer} failed: {message.reason or 'unknown'}"
        elif message.ready:
            ready.add(peer)

    def _check_silence(self, peers: list[int], last_seen: dict[int, float], started: float):
        now = time.monotonic()
        for peer in peers:
            seen = last_seen.get(peer)
            if seen is None and now - started > self.startup_s:
                self.failure = f"node {peer} never answered in {self.startup_s:.0f}s"
            elif seen is not None and now - seen > self.spec.heartbeat_timeout_s:
                self.failure = f"node {peer} silent for {now - seen:.1f}s"


class _Terminated(Exception):
    """SIGTERM during start-up (e.g. the heartbeat found a dead peer)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def launch(args: argparse.Namespace) -> int:
    from fastserve.deploy.cli import config_from_args
    from fastserve.deploy.serve import prepare

    configure_logging(f"launch-{args.node_rank}", args.log_level)
    log = get_logger()
    try:
        spec = ClusterSpec.load(args.config)
        cfg = prepare(node_config(spec, args.node_rank, config_from_args(args)))
    except (ClusterError, OSError, ValueError) as exc:
        log.error("launch_failed", error=str(exc))
        return 2
    log.info(
        "starting",
        node_rank=args.node_rank,
        nodes=len(spec.nodes),
        tp=spec.tp,
        pp=spec.pp,
        workers=list(spec.worker_ranks(args.node_rank)),
        model=cfg.model,
    )
    beat = Heartbeat(spec, args.node_rank, cfg.ready_timeout_s)
    beat.start()
    restarts = RestartPolicy.from_config(cfg) if len(spec.nodes) == 1 else None
    sup = Supervisor(cfg, node_children(spec, args.node_rank), restarts)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        sup.start()
    except (ServerFailure, _Terminated) as exc:
        reason = beat.failure or str(exc) or "terminated during start-up"
        log.error("startup_failed", error=reason)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.shutdown()
        beat.announce_down(reason)
        return 1
    beat.ready.set()
    if args.node_rank == 0:
        log.info("serving", url=f"http://{cfg.host}:{cfg.port}", model=cfg.served_model_name)
    code = sup.watch()  # its own SIGTERM handler: a clean stop returns 0
    if beat.failure is not None:
        code = 1  # the heartbeat stopped us: a peer died
    elif code != 0:
        beat.announce_down("a process of this node failed")
    beat.stop()
    log.info("launch_exit", node_rank=args.node_rank, code=code, error=beat.failure)
    return code


def register(p: argparse.ArgumentParser) -> None:
    from fastserve.deploy.cli import add_server_args

    add_server_args(p)
    p.add_argument("--config", required=True, help="cluster file (TOML): nodes, model, tp, pp")
    p.add_argument("--node-rank", type=int, required=True, help="this node's index in the file")
    p.set_defaults(func=launch)
