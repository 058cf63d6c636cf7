"""Prompt log-probabilities (completions `echo` with `logprobs`, what evaluation harnesses
score with), gathered chunk by chunk while a prompt is prefilled.

Position p's logits predict token p + 1, so a chunk [s, s + n) yields the log-probabilities
of tokens s + 1 .. s + n - 1, and its last position waits for the next chunk's first token
(kept as one log-softmax row). The last prompt position is the sampling row: it predicts
the first output token, not a prompt token. Only jobs that asked compute any of this, and
only while their prompt is prefilled for the first time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fastserve.protocol.common import TokenLogprobs
from fastserve.runtime.worker_state import BatchEntry

_ROWS_PER_SLICE = 256  # bounds the float32 log-softmax temporaries to 256 x vocab


@dataclass
class _Progress:
    logprobs: list[float] = field(default_factory=list)  # of prompt tokens 1 .. len
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)
    pending: torch.Tensor | None = None  # log-softmax row of position len(logprobs)


class PromptLogprobs:
    """Per job, the prompt log-probabilities computed so far."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Progress] = {}
        self._delivered: set[str] = set()

    @staticmethod
    def asked(entry: BatchEntry) -> bool:
        return entry.sampling.prompt_logprobs is not None and entry.num_generated == 0

    def rows(self, entry: BatchEntry) -> list[int]:
        """Offsets inside the entry's chunk whose logits this job needs (besides its
        sampling row); [] for jobs that did not ask."""
        if not self.asked(entry) or entry.request_id in self._delivered:
            return []
        done = len(self._jobs.get(entry.request_id, _Progress()).logprobs)
        s, n = entry.start_pos, len(entry.token_ids)
        end = s + n - 1 if entry.sample else s + n  # the sampling row predicts the output
        return [p - s for p in range(max(s, done), end)]

    def add(self, entry: BatchEntry, offsets: list[int], logits: torch.Tensor) -> None:
        """Record a chunk: `logits[i]` are the raw logits at offset `offsets[i]`."""
        if not self.asked(entry) or entry.request_id in self._delivered:
            return
        job = self._jobs.setdefault(entry.request_id, _Progress())
        s, ids = entry.start_pos, entry.token_ids
        k = int(entry.sampling.prompt_logprobs or 0)
        if job.pending is not None:
            if s == len(job.logprobs) + 1:  # the chunk that holds the awaited token
                self._record(job, job.pending.unsqueeze(0), [ids[0]], k)
            job.pending = None
        if s > len(job.logprobs):
            # Positions never computed here (the scheduler skipped them): no value.
            gap = s - len(job.logprobs)
            job.logprobs += [float("nan")] * gap
            job.top_ids += [[] for _ in range(gap)]
            job.top_logprobs += [[] for _ in range(gap)]
        for lo in range(0, len(offsets), _ROWS_PER_SLICE):
            part = offsets[lo : lo + _ROWS_PER_SLICE]
            rows = torch.log_softmax(logits[lo : lo + len(part)].float(), dim=-1)
            known = [i for i, o in enumerate(part) if o + 1 < len(ids)]
            if known:
                targets = [ids[part[i] + 1] for i in known]
                self._record(job, rows[known], targets, k)
            if len(known) < len(part):  # the chunk's last position: its target comes next
                job.pending = rows[-1].clone()

    def take(self, request_id: str) -> TokenLogprobs | None:
        """The prompt's log-probabilities, once, when its first token is sampled."""
        job = self._jobs.pop(request_id, None) or _Progress()  # a one-token prompt has none
        if request_id in self._delivered:
            return None
        self._delivered.add(request_id)
        return TokenLogprobs(job.logprobs, job.top_ids, job.top_logprobs)

    def release(self, request_id: str) -> None:
        self._jobs.pop(request_id, None)
        self._delivered.discard(request_id)

    @staticmethod
    def _record(job: _Progress, rows: torch.Tensor, targets: list[int], k: int) -> None:
        idx = torch.tensor(targets, device=rows.device).unsqueeze(1)
        job.logprobs += rows.gather(1, idx).squeeze(1).tolist()
        if k:
            vals, top = rows.topk(min(k, rows.shape[1]), dim=-1)
            job.top_ids += top.tolist()
            job.top_logprobs += vals.tolist()
        else:
            job.top_ids += [[] for _ in targets]
            job.top_logprobs += [[] for _ in targets]
