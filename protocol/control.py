"""Start-up and failure messages between the actors and their supervisor, and the
heartbeat between the launches of a multi-node cluster (deploy/launch.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ActorReady:
    """An actor finished starting: sockets bound or connected, model loaded."""

    actor: str  # actor name, e.g. "worker-0"
    pid: int  # OS process id
    info: dict[str, str] = field(default_factory=dict)  # facts for the log (block counts, model)


@dataclass
class ActorFailed:
    """An actor is about to exit because of an error."""

    actor: str  # actor name
    pid: int  # OS process id
    message: str  # the error, one line


@dataclass
class EngineDown:
    """Supervisor -> frontend: an engine process (scheduler, cache manager, a worker) died
    or failed. The frontend fails every open request at once instead of letting it hang."""

    generation: int  # engine generation that failed (0: the first one started)
    reason: str  # what failed, one line
    restarting: bool  # True: a new generation is coming; False: the server is going down


@dataclass
class EngineUp:
    """Supervisor -> frontend: a new generation of engine processes is ready to serve."""

    generation: int  # the generation now serving


@dataclass
class NodeAlive:
    """Launch -> launch, every half second: a node's heartbeat (node 0 hears every node,
    the others hear node 0). A node silent for the cluster's timeout counts as dead."""

    node_rank: int  # the sending node's index in the cluster file
    ready: bool  # its processes are ready (node 0 reports serving once every node is)


@dataclass
class NodeDown:
    """Launch -> launch: a node is failing and tears itself down; node 0 relays it, so
    every other node stops too instead of serving half a model."""

    node_rank: int  # the failing node (0 when node 0 relays or fails itself)
    reason: str  # why, one line
