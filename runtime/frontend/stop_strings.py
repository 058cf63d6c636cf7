"""Stop strings: cut the output before the first stop string, never streaming any part of it.

Text that could be the beginning of a stop string is held back until the next text shows
whether the stop string completes; only then is it released (or dropped, on a match).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopStringMatcher:
    """Per-request filter between the detokenizer and the client."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stops = [s for s in stop if s]  # an empty stop string would match everywhere
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the output, if any

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit, whether a stop string was found)."""
        if not self._stops:
            return text, False
        if self.matched is not None:
            return "", True
        buf = self._held + text
        # A stop string cannot start in already emitted text: any such start would have been
        # a prefix of it at emission time and been held back. So searching `buf` suffices.
        first = -1
        for stop in self._stops:
            at = buf.find(stop)
            if at >= 0 and (first < 0 or at < first):
                first, self.matched = at, stop
        if first >= 0:
            self._held = ""
            return buf[:first], True
        keep = self._hold_length(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """The output ended without a match: release the held text."""
        held, self._held = self._held, ""
        return held

    def _hold_length(self, buf: str) -> int:
        # The longest suffix of `buf` that is a proper prefix of some stop string.
        for k in range(min(self._longest - 1, len(buf)), 0, -1):
            tail = buf[-k:]
            if any(stop.startswith(tail) for stop in self._stops):
                return k
        return 0
