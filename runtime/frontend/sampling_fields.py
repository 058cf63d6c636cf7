"""The sampling, stop and stream fields both endpoints share, and the context-length checks."""

from __future__ import annotations

from typing import Any

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.frontend import request_fields as rf
from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.fields import (
    get_bool,
    get_dict,
    get_int_list,
    get_str_or_str_list,
)
from fastserve.runtime.frontend.parsed_request import ParsedRequest, ServerLimits
from fastserve.runtime.frontend.tokenizer import ModelTokenizer


def common_fields(
    body: dict[str, Any],
    kind: str,
    model: str,
    prompt_ids: list[int],
    tokenizer: ModelTokenizer,
    limits: ServerLimits,
    max_token_specs: tuple[rf.Number, ...],
) -> ParsedRequest:
    """Sampling, stop and stream fields shared by both endpoints, and the length checks."""
    max_tokens, max_name = None, max_token_specs[0].name
    for spec in max_token_specs:
        max_tokens = spec.read(body)
        if max_tokens is not None:
            max_name = spec.name
            break
    temperature = rf.TEMPERATURE.read(body)
    top_p = rf.TOP_P.read(body)
    top_k = rf.TOP_K.read(body)
    seed = rf.SEED.read(body)
    min_tokens = rf.MIN_TOKENS.read(body) or 0
    priority = rf.PRIORITY.read(body) or 0
    stop = [s for s in get_str_or_str_list(body, "stop") if s]
    rf.check_stop_strings(stop)
    stop_token_ids = get_int_list(body, "stop_token_ids")
    rf.check_token_ids(
        "stop_token_ids", stop_token_ids, tokenizer.vocab_size, rf.MAX_STOP_TOKEN_IDS
    )
    ignore_eos = bool(get_bool(body, "ignore_eos"))
    stream = bool(get_bool(body, "stream"))
    options = get_dict(body, "stream_options")
    if options is not None and not stream:
        raise RequestError(
            "`stream_options` is only allowed when `stream` is true", param="stream_options"
        )
    include_usage = bool(get_bool(options or {}, "include_usage"))
    max_tokens = fit_context(kind, len(prompt_ids), max_tokens, limits)
    if min_tokens > max_tokens:
        raise RequestError(
            f"`min_tokens` ({min_tokens}) must not exceed `{max_name}` ({max_tokens})",
            param="min_tokens",
        )
    if not ignore_eos:
        # The tokenizer's EOS ids may include ones the model config does not list.
        stop_token_ids += [t for t in tokenizer.eos_token_ids if t not in stop_token_ids]
    sampling = SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=-1 if top_k in (None, 0) else top_k,
        seed=seed,
        min_tokens=min_tokens,
        stop_token_ids=stop_token_ids,
        ignore_eos=ignore_eos,
    )
    return ParsedRequest(
        kind, model, prompt_ids, sampling, stop, stream, include_usage, priority=priority
    )


def fit_context(kind: str, prompt_len: int, max_tokens: int | None, limits: ServerLimits) -> int:
    """max_tokens, checked (or, when not given, chosen) so that prompt + completion fit."""
    where = "messages" if kind == "chat" else "prompt"
    ctx = limits.max_model_len
    if prompt_len == 0:
        raise RequestError(f"the {where} is empty: it must hold at least one token", param=where)
    if max_tokens is None:
        room = ctx - prompt_len
        if room < 1:
            raise RequestError(
                f"This model's maximum context length is {ctx} tokens. However, you requested "
                f"{prompt_len} tokens in the {where}, which leaves no room for the completion. "
                f"Please reduce the length of the {where}.",
                param=where,
            )
        return min(limits.default_max_tokens, room)
    if prompt_len + max_tokens > ctx:
        raise RequestError(
            f"This model's maximum context length is {ctx} tokens. However, you requested "
            f"{prompt_len + max_tokens} tokens ({prompt_len} in the {where}, {max_tokens} in "
            f"the completion). Please reduce the length of the {where} or completion.",
            param=where,
        )
    return max_tokens
