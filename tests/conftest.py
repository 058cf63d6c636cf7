"""Test-wide set-up: structured logs at info level (debug tick logs are too chatty)."""

from fastserve.runtime.logging import configure_logging

configure_logging("test", "info")
