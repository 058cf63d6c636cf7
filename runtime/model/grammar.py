"""Structured output in the worker: one llguidance matcher per constrained request.

The frontend turns `response_format` (or a forced tool call) into an llguidance grammar and
validates it before anything is queued; the worker only compiles it, masks the logits of
the rows that carry one and advances the matcher with each sampled token. Rows without a
grammar are never touched, so unconstrained requests pay nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import llguidance
import structlog
import torch

_log = structlog.get_logger(actor="worker")
_BITS = 32  # llguidance's bitmask: one int32 per 32 vocabulary entries


class GrammarBook:
    """The matchers of the constrained requests a worker knows, by request id."""

    def __init__(self, tokenizer_json: str | Path, vocab_size: int, eos_token_ids: Sequence[int]):
        self._tokenizer_json = Path(tokenizer_json)
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self._tokenizer: llguidance.LLTokenizer | None = None  # built at the first grammar
        self._executor: llguidance.LLExecutor | None = None
        self._matchers: dict[str, llguidance.LLMatcher] = {}
        self._shifts = torch.arange(_BITS, dtype=torch.int32)

    def tokenizer(self) -> llguidance.LLTokenizer:
        # About a quarter of a second for a 50k vocabulary: paid once, and only by servers
        # that get a constrained request.
        if self._tokenizer is None:
            text = self._tokenizer_json.read_text(encoding="utf-8")
            self._tokenizer = llguidance.LLTokenizer(
                text, n_vocab=self.vocab_size, eos_token=self.eos_token_ids
            )
        return self._tokenizer

    def matcher(self, request_id: str, grammar: str) -> llguidance.LLMatcher:
        m = self._matchers.get(request_id)
        if m is None:
            m = llguidance.LLMatcher(self.tokenizer(), grammar, log_level=0)
            if m.is_error():
                # The frontend validated it against the same tokenizer; if compiling still
                # fails, the request can only end (its mask then allows only EOS).
                _log.warning("grammar.invalid", request_id=request_id, error=m.get_error())
            self._matchers[request_id] = m
        return m

    def mask_(self, logits: torch.Tensor, rows: list[int], grammars: list[tuple[str, str]]) -> None:
        """Set to -inf, in `logits[rows[i]]`, every token grammar i does not allow next.
        `grammars` holds (request id, grammar) per row."""
        matchers = [self.matcher(rid, g) for rid, g in grammars]
        words = (self.vocab_size + _BITS - 1) // _BITS
        bitmask = torch.zeros((len(rows), words), dtype=torch.int32)
        live = [(m, i) for i, m in enumerate(matchers) if not m.is_error()]
        if live:
            if self._executor is None:
                self._executor = llguidance.LLExecutor()
            # Fills the masks in parallel threads, without the GIL.
            self._executor.unsafe_compute_mask_ptr(live, bitmask.data_ptr(), words * 4, len(rows))
        allowed = ((bitmask.unsqueeze(-1) >> self._shifts) & 1).view(len(rows), -1)
        allowed = allowed[:, : logits.shape[1]].bool()
        for i, m in enumerate(matchers):
            if m.is_error() or not bool(allowed[i].any()):
                allowed[i] = False  # nothing valid is left: end the output
                allowed[i, self.eos_token_ids] = True
        idx = torch.tensor(rows, device=logits.device)
        sub = logits.index_select(0, idx)
        sub.masked_fill_(~allowed.to(logits.device), float("-inf"))
        logits.index_copy_(0, idx, sub)

    def advance(self, request_id: str, token_id: int) -> None:
        """The token sampled for a constrained request: the matcher moves past it."""
        m = self._matchers.get(request_id)
        if m is not None and not m.is_error() and token_id not in self.eos_token_ids:
            m.consume_token(token_id)

    def release(self, request_id: str) -> None:
        self._matchers.pop(request_id, None)
