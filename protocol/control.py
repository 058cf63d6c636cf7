"""Start-up and failure messages between the actors and their supervisor."""

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
