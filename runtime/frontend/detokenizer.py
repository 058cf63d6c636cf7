"""Incremental detokenization: token ids arrive a few at a time, text leaves only when stable.

Decoding each new token alone is wrong for two reasons: byte-level BPE splits one UTF-8
character over several tokens (alone, each decodes to U+FFFD), and some tokenizers
(SentencePiece) drop or add a leading space depending on what precedes a token. So we decode
a short window that starts a few tokens back (`prefix`) and emit only what the new tokens
add to it, and we hold the text back while it ends in an incomplete character.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"
# Prompt tokens decoded as left context so the first output token gets its spacing right.
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Per-request state: the decode window over the prompt tail and the output so far."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0  # start of the decode window
        self._read = len(self._ids)  # ids before this have been emitted as text

    def push(self, token_ids: Sequence[int]) -> str:
        """Add new tokens; return the newly completed text (possibly empty)."""
        self._ids.extend(token_ids)
        return self._emit(final=False)

    def flush(self) -> str:
        """The request ended: return whatever is left, incomplete characters included."""
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full_text = self._decode(self._ids[self._prefix :])
        if not final and (
            len(full_text) <= len(prefix_text) or full_text.endswith(REPLACEMENT_CHAR)
        ):
            # Nothing visible yet (special token) or a character still waits for its bytes.
            return ""
        new_text = full_text[len(prefix_text) :]
        # The tokens just emitted become the next window's context; older ids are dropped so
        # the decode cost stays bounded by a few tokens instead of growing with the output.
        del self._ids[: self._read]
        self._prefix = 0
        self._read = len(self._ids)
        return new_text
