"""Value types shared by messages to several destinations."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum


class CopyDirection(StrEnum):
    """Which way a job's KV copy goes. Travels as its string value, so a sender that
    passes the bare string ("out"/"in") encodes the same frame; decoding rejects any
    other value."""

    OFFLOAD = "out"  # device -> host
    UPLOAD = "in"  # host -> device


class KVLocation(Enum):
    """Where a job's KV cache lives (the scheduler's jobs and the cache manager's directory)."""

    NONE = "none"  # nothing computed yet (or released)
    DEVICE = "device"  # resident in the device pool: the job can run
    TO_HOST = "to_host"  # offload in flight
    HOST = "host"  # in the host pool: must be uploaded before it runs
    TO_DEVICE = "to_device"  # upload in flight


@dataclass
class SamplingParams:
    """How one request picks its tokens and when it stops (OpenAI semantics)."""

    max_tokens: int = 16  # most new tokens to generate
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass kept, in (0, 1]
    top_k: int = -1  # keep the k most likely tokens; -1 keeps all
    seed: int | None = None  # per-request RNG seed; None draws from the worker's RNG
    min_tokens: int = 0  # EOS and stop token ids are masked until this many are generated
    stop_token_ids: list[int] = field(default_factory=list)  # extra ids that end the request
    ignore_eos: bool = False  # keep generating past EOS (benchmarks force lengths with it)
    logprobs: bool = False  # report the log-probability of each sampled token
    top_logprobs: int = 0  # with logprobs: also the k most likely alternatives of each token
    prompt_logprobs: int | None = None  # None: none; k: each prompt token's logprob and k alternatives
    grammar: str | None = None  # llguidance grammar (JSON text) the output must match; None: free


@dataclass
class TokenLogprobs:
    """Log-probabilities of a run of tokens, each with its most likely alternatives."""

    logprobs: list[float]  # of each token, in order (NaN where it was not computed)
    top_ids: list[list[int]]  # per token: the k most likely ids, most likely first
    top_logprobs: list[list[float]]  # their log-probabilities, the same shape as top_ids


@dataclass
class BlockCopy:
    """One job's KV moved between the device and the host pool, on every rank at once."""

    request_id: str  # job whose KV moves
    src_block_ids: list[int]  # blocks read, in block-table order (device ids for offload)
    dst_block_ids: list[int]  # blocks written, same length and order (host ids for offload)
    # Leading entries of the job's block table that do not move: device blocks other jobs
    # share (prefix caching) stay on the device; src/dst cover the entries after them.
    keep_blocks: int = 0
