"""Batched token sampling: greedy, temperature, top-k, top-p, per-request seeds, min_tokens,
grammar masks, and the log-probabilities of the chosen token and its likeliest alternatives.

Sampling uses the exponential race (argmax of p / E with E ~ Exp(1) is a draw from p).
A seeded request draws its noise over the whole vocabulary from its own generator, so its
tokens do not depend on which other requests share the batch. Grammar masks and top-k
log-probabilities touch only the rows that asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.grammar import GrammarBook


@dataclass
class SampleRequest:
    """What the sampler needs to know about one row of logits."""

    request_id: str
    params: SamplingParams
    num_generated: int = 0  # tokens generated so far (for min_tokens)


@dataclass
class SampleOutput:
    """One sampled token per row, its log-probability and, for the rows that asked
    (params.top_logprobs > 0), the likeliest tokens of the same distribution."""

    tokens: torch.Tensor  # [B] token ids
    logprobs: torch.Tensor  # [B] log-probability of each chosen token
    top_ids: list[list[int]]  # per row: its top_logprobs likeliest ids (empty when 0)
    top_logprobs: list[list[float]]  # their log-probabilities


class Sampler:
    """Samples one token per row; keeps one torch.Generator per seeded request and, through
    its GrammarBook, one matcher per constrained request."""

    def __init__(
        self,
        eos_token_ids: Sequence[int],
        device: torch.device,
        seed: int = 0,
        grammar: GrammarBook | None = None,
    ):
        self.eos_token_ids = list(eos_token_ids)
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed)
        self.grammar = grammar
        self._request_generators: dict[str, torch.Generator] = {}

    def release(self, request_id: str) -> None:
        """Forget a finished request's generator and matcher."""
        self._request_generators.pop(request_id, None)
        if self.grammar is not None:
            self.grammar.release(request_id)

    def sample(
        self, logits: torch.Tensor, requests: Sequence[SampleRequest], inplace: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, V] float32 -> (token ids [B], log-probabilities [B]); see `run`."""
        out = self.run(logits, requests, inplace)
        return out.tokens, out.logprobs

    def run(
        self, logits: torch.Tensor, requests: Sequence[SampleRequest], inplace: bool = False
    ) -> SampleOutput:
        """Sample one token per row of logits [B, V] float32.

        Log-probabilities are the log-softmax of the temperature-scaled logits after the
        min_tokens and grammar masks, before top-k/top-p: the distribution the token was
        drawn from, before truncation. With inplace=True the masks and temperature are
        applied to `logits` itself (saves a copy per step).
        """
        if logits.shape[0] != len(requests):
            raise ValueError(f"{logits.shape[0]} logit rows for {len(requests)} requests")
        if not inplace:
            logits = logits.clone()
        self._mask_min_tokens_(logits, requests)
        guided = [i for i, r in enumerate(requests) if r.params.grammar is not None]
        if guided:
            if self.grammar is None:
                raise ValueError("a request has a grammar but this sampler has no GrammarBook")
            pairs = [(requests[i].request_id, str(requests[i].params.grammar)) for i in guided]
            self.grammar.mask_(logits, guided, pairs)
        temps = [r.params.temperature for r in requests]
        if any(t > 0.0 and t != 1.0 for t in temps):
            inv = torch.tensor([1.0 / t if t > 0.0 else 1.0 for t in temps])
            logits.mul_(inv.to(logits.device, logits.dtype).unsqueeze(1))
        # Only the chosen tokens' log-probabilities are needed: logit - logsumexp per row,
        # which is much cheaper than a full log_softmax over the vocabulary.
        lse = torch.logsumexp(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        random_rows = [i for i, t in enumerate(temps) if t > 0.0]
        if random_rows:
            rows = torch.tensor(random_rows, device=logits.device)
            sub = logits.index_select(0, rows) - lse.index_select(0, rows).unsqueeze(1)
            sub = self._filter_top_k_top_p(sub, [requests[i].params for i in random_rows])
            noise = self._noise(sub, [requests[i] for i in random_rows])
            tokens[rows] = (sub.exp() / noise).argmax(dim=-1)
        chosen = logits.gather(1, tokens.unsqueeze(1)).squeeze(1) - lse
        top_ids, top_lps = self._top_logprobs(logits, lse, requests)
        if guided:
            assert self.grammar is not None
            ids = tokens.tolist()
            for i in guided:
                self.grammar.advance(requests[i].request_id, ids[i])
        return SampleOutput(tokens, chosen, top_ids, top_lps)

    @staticmethod
    def _top_logprobs(
        logits: torch.Tensor, lse: torch.Tensor, requests: Sequence[SampleRequest]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """The k likeliest tokens of the rows that asked for them; [] for the others (no
        log_softmax over the vocabulary for them)."""
        asked = [i for i, r in enumerate(requests) if r.params.logprobs and r.params.top_logprobs]
        ids: list[list[int]] = [[] for _ in requests]
        lps: list[list[float]] = [[] for _ in requests]
        if not asked:
            return ids, lps
        rows = torch.tensor(asked, device=logits.device)
        width = min(max(requests[i].params.top_logprobs for i in asked), logits.shape[1])
        vals, idx = logits.index_select(0, rows).topk(width, dim=-1)
        vals = vals - lse.index_select(0, rows).unsqueeze(1)
        for i, v, t in zip(asked, vals.tolist(), idx.tolist(), strict=True):
            k = requests[i].params.top_logprobs
            ids[i], lps[i] = t[:k], v[:k]
        return ids, lps

    def _mask_min_tokens_(self, logits: torch.Tensor, requests: Sequence[SampleRequest]) -> None:
        rows: list[int] = []
        cols: list[int] = []
        for i, r in enumerate(requests):
            # A grammar decides alone when a constrained output may end: masking EOS once
            # the grammar allows nothing else would leave no token at all.
            if r.num_generated < r.params.min_tokens and r.params.grammar is None:
                banned = set(self.eos_token_ids) | set(r.params.stop_token_ids)
                cols.extend(banned)
                rows.extend([i] * len(banned))
        if rows:
            logits[torch.tensor(rows), torch.tensor(cols)] = float("-inf")

    @staticmethod
    def _filter_top_k_top_p(logprobs: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
        """Set to -inf every token outside each row's top-k and top-p nucleus."""
        vocab = logprobs.shape[1]
        ks = [p.top_k if 0 < p.top_k < vocab else vocab for p in params]
        ps = [p.top_p for p in params]
        if all(k == vocab for k in ks) and all(p >= 1.0 for p in ps):
            return logprobs
        # Sorting the whole vocabulary is the costly part: when every row has a top-k, the
        # largest k candidates are enough (top-p then works inside them).
        width = max(ks)
        if width < vocab:
            vals, idx = logprobs.topk(width, dim=-1)
        else:
            vals, idx = logprobs.sort(dim=-1, descending=True)
        dev = logprobs.device
        rank = torch.arange(width, device=dev).unsqueeze(0)
        drop = rank >= torch.tensor(ks, device=dev).unsqueeze(1)
        probs = vals.masked_fill(drop, float("-inf")).softmax(dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (mass before a token < top_p).
        mass_before = probs.cumsum(dim=-1) - probs
        drop |= mass_before >= torch.tensor(ps, device=dev, dtype=probs.dtype).unsqueeze(1)
        drop[:, 0] = False
        out = torch.full_like(logprobs, float("-inf"))
        out.scatter_(1, idx, vals.masked_fill(drop, float("-inf")))
        return out

    def _noise(self, sub: torch.Tensor, requests: list[SampleRequest]) -> torch.Tensor:
        noise = torch.empty_like(sub)
        unseeded = [i for i, r in enumerate(requests) if r.params.seed is None]
        if unseeded:
            part = torch.empty((len(unseeded), sub.shape[1]), device=sub.device, dtype=sub.dtype)
            part.exponential_(generator=self.generator)
            noise[torch.tensor(unseeded, device=sub.device)] = part
        for i, r in enumerate(requests):
            if r.params.seed is not None:
                noise[i].exponential_(generator=self._generator_for(r))
        # A draw of exactly 0 would turn 0 / 0 into NaN, which argmax would pick.
        return noise.clamp_min_(torch.finfo(noise.dtype).tiny)

    def _generator_for(self, request: SampleRequest) -> torch.Generator:
        gen = self._request_generators.get(request.request_id)
        if gen is None:
            gen = torch.Generator(self.device)
            gen.manual_seed(int(request.params.seed))  # type: ignore[arg-type]
            self._request_generators[request.request_id] = gen
        return gen
