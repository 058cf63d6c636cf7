"""Multi-turn chat workloads with shared system prompts: the traffic prefix caching is for.

Conversations start at the given arrival times; each picks one of a few system prompts and
has a number of turns. Turn k's prompt is the system prompt, every earlier question and
answer of its conversation, then its own question, so consecutive turns share everything
but the new question. Turn k is due `k * think_s` seconds after its conversation starts,
and is never sent before the previous answer has arrived (`Request.after`).

Content is described, not spelled out (`Request.segments`): each part of a prompt is a
content key and a length, and `prompt_token_ids` turns a key into the same token ids
wherever it appears. An earlier answer is resent as stand-in ids of the length it had, not
as the tokens the server generated (the replay does not read them back), so a server finds
the cached earlier prompts but not its own earlier answers: the measured gain is a lower
bound of what real chat traffic, which resends the answers verbatim, would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fastserve.runtime.sim.workload import Request, lognormal_lengths


@dataclass(frozen=True)
class ConversationShape:
    """The knobs of a multi-turn workload (the `conversation` setting of a preset)."""

    system_prompts: int = 4  # distinct system prompts, each shared by many conversations
    system_len: int = 160  # tokens of each system prompt
    min_turns: int = 2  # turns per conversation, uniform in [min_turns, max_turns]
    max_turns: int = 6
    mean_user: float = 32.0  # tokens of each question (lognormal, CV 0.5)
    think_s: float = 1.0  # least seconds between two turns of a conversation

    @classmethod
    def from_setting(cls, setting: dict[str, float]) -> ConversationShape:
        shape = cls(**setting)  # type: ignore[arg-type]
        if shape.system_prompts < 1 or shape.system_len < 0 or shape.mean_user < 1:
            raise ValueError("conversation needs system_prompts, mean_user >= 1, system_len >= 0")
        if not 1 <= shape.min_turns <= shape.max_turns or shape.think_s < 0:
            raise ValueError("conversation needs 1 <= min_turns <= max_turns and think_s >= 0")
        return shape


def conversation_workload(
    n: int,
    starts: Sequence[float],
    outputs: Sequence[int],
    shape: ConversationShape,
    rng: np.random.Generator,
    max_user: int,
) -> list[Request]:
    """`n` turns in all, from conversations starting at `starts` (as many as needed; the
    last one may be cut short); `outputs` are the answers' lengths, one per turn."""
    requests: list[Request] = []
    user_lens = lognormal_lengths(n, shape.mean_user, 0.5, rng, max_len=max_user)
    num_keys = shape.system_prompts  # keys below this are the system prompts
    for start in starts:
        if len(requests) >= n:
            break
        system = int(rng.integers(shape.system_prompts))
        history: list[tuple[int, int]] = [(system, shape.system_len)] if shape.system_len else []
        turns = int(rng.integers(shape.min_turns, shape.max_turns + 1))
        for turn in range(min(turns, n - len(requests))):
            i = len(requests)
            question = (num_keys + 2 * i, int(user_lens[i]))
            segments = (*history, question)
            requests.append(
                Request(
                    float(start) + turn * shape.think_s,
                    sum(length for _, length in segments),
                    int(outputs[i]),
                    segments=segments,
                    after=i - 1 if turn else -1,
                )
            )
            history += [question, (num_keys + 2 * i + 1, int(outputs[i]))]  # its answer
    if len(requests) < n:
        raise ValueError(f"{len(starts)} conversations hold {len(requests)} turns, {n} asked")
    return requests


def prompt_token_ids(
    requests: Sequence[Request],
    rng: np.random.Generator,
    token_range: tuple[int, int],
    repeat: bool,
    seed: int = 0,
) -> list[list[int]]:
    """Every request's prompt ids: random ones drawn from `rng` in order for requests
    without segments (as the replay always drew them), the ids of each content key
    (seeded by `seed` and the key) for those with."""
    low, high = token_range
    parts: dict[int, list[int]] = {}

    def part(key: int, length: int) -> list[int]:
        ids = parts.get(key)
        if ids is None or len(ids) < length:
            ids = np.random.default_rng([seed, 4, key]).integers(low, high, size=length).tolist()
            parts[key] = ids
        return ids[:length]

    out = []
    for r in requests:
        if repeat:
            out.append([low] * r.prompt_len)
        elif not r.segments:
            out.append(rng.integers(low, high, size=r.prompt_len).tolist())
        else:
            out.append([t for key, length in r.segments for t in part(key, length)])
    return out
