"""structlog set-up: JSON lines with `actor`, `request_id` and `tick` where they apply.

Every process calls `configure_logging` once; `grep request_id=` across all processes'
output then rebuilds a request's life (arrival, ticks it ran in, swaps, finish).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(actor: str, level: str = "info") -> None:
    """JSON lines on stderr, each stamped with the actor name, pid and wall time."""
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
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(actor=actor, pid=os.getpid())


def get_logger(**fields: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with extra bound fields (e.g. request_id)."""
    return structlog.get_logger().bind(**fields)
