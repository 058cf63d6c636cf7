"""structlog set-up: JSON lines with `actor`, `request_id` and `tick` where they apply.

Every process calls `configure_logging` once; `fastserve trace` (benchmarks/trace_cmd.py) then
rebuilds a request's life from all processes' output (arrival, admission, level changes,
preemptions, swaps, first token, finish), or a `grep` for its request id does.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(actor: str, level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or `stream`, e.g. a test's file), each stamped with the actor
    name, pid and wall time."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        # One write per line: processes sharing a stderr file must not interleave mid-line.
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(actor=actor, pid=os.getpid())


def get_logger(**fields: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with extra bound fields (e.g. request_id)."""
    return structlog.get_logger().bind(**fields)
