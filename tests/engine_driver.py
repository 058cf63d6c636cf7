"""A minimal loop that drives ModelRunner the way a worker would, for tests.

Blocks are handed out from a counter (optionally shuffled); prompts are prefilled together
(or one job at a time) and then decoded together, greedily, for a fixed number of tokens.
Each step keeps the top log-probabilities so two runs can be compared for near-ties.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.runner import BatchEntry, ModelRunner

GREEDY = SamplingParams(temperature=0.0, max_tokens=1 << 30, ignore_eos=True)


@dataclass
class GenResult:
    """Generated tokens and, per step, the top log-probabilities (token id -> logprob)."""

    tokens: list[int] = field(default_factory=list)
    top: list[dict[int, float]] = field(default_factory=list)


def _top(logprobs: torch.Tensor, k: int) -> dict[int, float]:
    vals, ids = logprobs.topk(k)
    return dict(zip(ids.tolist(), vals.tolist(), strict=True))


def block_tables(
    runner: ModelRunner, lengths: list[int], shuffle_seed: int | None = None
) -> list[list[int]]:
    """Disjoint block tables covering each length (ids shuffled over the pool if asked)."""
    ids = list(range(runner.device_pool.num_blocks))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(ids)
    tables = []
    for n in lengths:
        need = -(-n // runner.block_size)
        if need > len(ids):
            raise ValueError("device pool too small for the test")
        tables.append(ids[:need])
        ids = ids[need:]
    return tables


def greedy_generate(
    runner: ModelRunner,
    prompts: list[list[int]],
    max_new_tokens: int,
    together: bool = True,
    shuffle_seed: int | None = None,
    topk: int = 8,
) -> list[GenResult]:
    """Greedy-decode every prompt; together=False runs each prompt alone, one after another."""
    if not together:
        return [
            greedy_generate(runner, [p], max_new_tokens, True, shuffle_seed, topk)[0]
            for p in prompts
        ]
    tables = block_tables(runner, [len(p) + max_new_tokens for p in prompts], shuffle_seed)
    names = [f"job{i}" for i in range(len(prompts))]
    results = [GenResult() for _ in prompts]
    entries = [
        BatchEntry(n, list(p), 0, t, True, GREEDY, 0)
        for n, p, t in zip(names, prompts, tables, strict=True)
    ]
    for _step in range(max_new_tokens):
        sampled, logprobs = runner.execute_with_logprobs(entries)
        next_entries = []
        for e, s, lp, r in zip(entries, sampled, logprobs, results, strict=True):
            r.tokens.append(s.token_id)
            r.top.append(_top(lp, topk))
            pos = e.start_pos + len(e.token_ids)
            next_entries.append(
                BatchEntry(
                    e.request_id, [s.token_id], pos, e.block_table, True, GREEDY, len(r.tokens)
                )
            )
        entries = next_entries
    for n in names:
        runner.release(n)
    return results


def divergence_report(a: GenResult, b: GenResult, tol: float = 1e-3) -> str | None:
    """None if the token lists agree, or first differ at a near-tie (both tokens within
    `tol` in log-probability in either run's distribution); otherwise a description."""
    for i, (x, y) in enumerate(zip(a.tokens, b.tokens, strict=False)):
        if x == y:
            continue
        for top in (a.top[i], b.top[i]):
            if x in top and y in top and abs(top[x] - top[y]) <= tol:
                return None
        return f"step {i}: {x} vs {y}; top a={a.top[i]} b={b.top[i]}"
    if len(a.tokens) != len(b.tokens):
        return f"lengths differ: {len(a.tokens)} vs {len(b.tokens)}"
    return None


def hf_greedy(
    model, prompts: list[list[int]], max_new_tokens: int, topk: int = 8
) -> list[GenResult]:
    """transformers' own greedy `generate`, one prompt at a time, never stopping at EOS."""
    results = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
                output_logits=True,
                return_dict_in_generate=True,
            )
        r = GenResult(tokens=out.sequences[0, len(prompt) :].tolist())
        r.top = [_top(torch.log_softmax(step[0].float(), -1), topk) for step in out.logits]
        results.append(r)
    return results
