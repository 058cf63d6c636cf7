"""The bounds of every request field, in one place: the parser enforces them and
/openapi.json publishes them (runtime/frontend/openapi.py), so the two cannot drift apart.

Every number that reaches the scheduler is bounded here: an unbounded integer would
overflow msgpack (or torch) on its way to a worker, far from the client that sent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.fields import check_range, get_float, get_int

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# OpenAI allows 4 stop sequences; servers built on vLLM accept more. 16 is generous, and the
# matcher's cost per token grows with their number and length.
MAX_STOP_STRINGS = 16
# The stop matcher holds back up to (longest stop - 1) characters of output: a long stop
# string would keep a stream silent for that long.
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 256
# Text longer than this many characters per token of context cannot fit the context
# (no tokenizer's average token is that long), so it is refused before the CPU-heavy
# tokenization of a many-megabyte string.
MAX_CHARS_PER_TOKEN = 64
MAX_LOGPROBS = 5  # completions `logprobs`: alternatives asked for (OpenAI's limit)
MAX_TOP_LOGPROBS = 20  # chat `top_logprobs` (OpenAI's limit)
# Choices per request: each is a job of its own (prompt blocks shared by the prefix cache),
# so n multiplies the work one request may queue.
MAX_CHOICES = 32


@dataclass(frozen=True)
class Number:
    """A numeric field: its JSON type, its bounds, and what it means (for the docs)."""

    name: str
    integer: bool
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed
    doc: str = ""

    def read(self, body: dict[str, Any]) -> Any:
        """The field's value (None when absent or null); RequestError when out of bounds."""
        value = get_int(body, self.name) if self.integer else get_float(body, self.name)
        if value is not None:
            check_range(self.name, value, low=self.low, high=self.high, low_open=self.low_open)
        return value

    def schema(self) -> dict[str, Any]:
        """This field as an OpenAPI 3.0 schema object."""
        out: dict[str, Any] = {"type": "integer" if self.integer else "number"}
        if self.low is not None:
            out["minimum"] = self.low
            if self.low_open:
                out["exclusiveMinimum"] = True
        if self.high is not None:
            out["maximum"] = self.high
        out["nullable"] = True
        if self.doc:
            out["description"] = self.doc
        return out


MAX_TOKENS = Number(
    "max_tokens", True, 1, None, doc="most tokens to generate; prompt + max_tokens must fit "
    "the context (default: the server's --default-max-tokens, capped by the room left); "
    "completions with echo also take 0 (the prompt and its logprobs only)",
)  # fmt: skip
MAX_COMPLETION_TOKENS = Number(
    "max_completion_tokens", True, 1, None, doc="chat: replaces max_tokens (wins over it)"
)
TEMPERATURE = Number("temperature", False, 0, 2, doc="0 = greedy; default 1")
TOP_P = Number("top_p", False, 0, 1, low_open=True, doc="nucleus mass kept; default 1")
TOP_K = Number("top_k", True, -1, INT32_MAX, doc="keep the k most likely tokens; 0 or -1: all")
SEED = Number("seed", True, INT64_MIN, INT64_MAX, doc="per-request RNG seed")
MIN_TOKENS = Number(
    "min_tokens", True, 0, None, doc="EOS and stop ids are masked until this many tokens; "
    "at most max_tokens",
)  # fmt: skip
N = Number(
    "n", True, 1, MAX_CHOICES, doc="choices per request, each sampled on its own (with a "
    "seed, choice i uses seed + i)",
)  # fmt: skip
BEST_OF = Number(
    "best_of", True, 1, MAX_CHOICES, doc="completions: generate this many (at least n, not "
    "streamed) and return the n of highest cumulative log-probability",
)  # fmt: skip
PRESENCE_PENALTY = Number("presence_penalty", False, 0, 0, doc="not supported: only 0")
FREQUENCY_PENALTY = Number("frequency_penalty", False, 0, 0, doc="not supported: only 0")
REPETITION_PENALTY = Number("repetition_penalty", False, 1, 1, doc="not supported: only 1")
LOGPROBS = Number(
    "logprobs", True, 0, MAX_LOGPROBS, doc="completions: each token's log-probability and "
    "this many likeliest alternatives; with echo, the prompt's too",
)  # fmt: skip
TOP_LOGPROBS = Number(
    "top_logprobs", True, 0, MAX_TOP_LOGPROBS, doc="chat, with logprobs: the likeliest "
    "alternatives of each token",
)  # fmt: skip

# Read with Number.read by both endpoints (the sampling knobs).
PRIORITY = Number(
    "priority", True, -(2**20), 2**20,
    doc="request class: lower is served first (vLLM's sign), above the policy's own order",
)  # fmt: skip
SAMPLING_NUMBERS = (TEMPERATURE, TOP_P, TOP_K, SEED, MIN_TOKENS, PRIORITY)
# Accepted only at one value (low == high): openai_schema rejects others with its reason.
NEUTRAL_ONLY = (PRESENCE_PENALTY, FREQUENCY_PENALTY, REPETITION_PENALTY)
# Per endpoint, for the published schema.
COMPLETION_NUMBERS = (MAX_TOKENS, *SAMPLING_NUMBERS, LOGPROBS, N, BEST_OF, *NEUTRAL_ONLY)
CHAT_NUMBERS = (
    MAX_COMPLETION_TOKENS, MAX_TOKENS, *SAMPLING_NUMBERS, TOP_LOGPROBS, N, *NEUTRAL_ONLY
)  # fmt: skip


def check_text_length(name: str, text_chars: int, max_model_len: int) -> None:
    """Refuse text that cannot fit the context before paying for its tokenization."""
    limit = max_model_len * MAX_CHARS_PER_TOKEN
    if text_chars > limit:
        raise RequestError(
            f"the {name} is {text_chars} characters long, more than this model's context of "
            f"{max_model_len} tokens can hold (at most {limit} characters)",
            param=name,
        )


def check_token_ids(name: str, ids: list[int], vocab_size: int, max_len: int) -> None:
    """A token-id list: bounded length, every id inside the vocabulary."""
    if len(ids) > max_len:
        raise RequestError(
            f"`{name}` holds {len(ids)} token ids, more than the {max_len} allowed", param=name
        )
    for t in ids:
        if not 0 <= t < vocab_size:
            raise RequestError(
                f"`{name}` token id {t} is out of range: the vocabulary has {vocab_size} tokens",
                param=name,
            )


def check_stop_strings(stop: list[str]) -> None:
    if len(stop) > MAX_STOP_STRINGS:
        raise RequestError(
            f"`stop` holds {len(stop)} strings, more than the {MAX_STOP_STRINGS} allowed",
            param="stop",
        )
    for s in stop:
        if len(s) > MAX_STOP_CHARS:
            raise RequestError(
                f"a `stop` string is {len(s)} characters long, more than the "
                f"{MAX_STOP_CHARS} allowed",
                param="stop",
            )
