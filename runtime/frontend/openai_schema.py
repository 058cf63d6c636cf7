"""Parsing and validation of /v1/completions and /v1/chat/completions bodies.

Everything a client can get wrong is caught here, so bad input never reaches the scheduler.
The result is a ParsedRequest: prompt token ids, SamplingParams, stop strings, stream flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.frontend.chat_messages import normalize_messages
from fastserve.runtime.frontend.chat_template import TemplateError
from fastserve.runtime.frontend.errors import RequestError, model_not_found
from fastserve.runtime.frontend.fields import (
    check_range,
    get_bool,
    get_dict,
    get_float,
    get_int,
    get_int_list,
    get_str,
    get_str_or_str_list,
    is_int_list,
    json_type,
)
from fastserve.runtime.frontend.tokenizer import ModelTokenizer

_INT64 = 2**63


@dataclass(frozen=True)
class ServerLimits:
    """What the server accepts: the model it serves and its context."""

    model_name: str  # the only accepted `model`
    max_model_len: int  # prompt + completion tokens must fit
    default_max_tokens: int  # used (capped by the room left) when the client gives none


@dataclass
class ParsedRequest:
    kind: str  # "completion" or "chat"
    model: str
    prompt_ids: list[int]
    sampling: SamplingParams
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with usage
    echo_text: str | None = None  # completions echo=True: the prompt text to prepend
    logprobs: int | None = None  # None: not asked; else alternatives asked (we report the sampled)


def parse_request(
    kind: str, body: Any, tokenizer: ModelTokenizer, limits: ServerLimits
) -> ParsedRequest:
    if kind == "chat":
        return parse_chat(body, tokenizer, limits)
    if kind == "completion":
        return parse_completion(body, tokenizer, limits)
    raise RequestError(
        f"unknown request type `{kind}`: expected `completion` or `chat`", param="type"
    )


def parse_completion(body: Any, tokenizer: ModelTokenizer, limits: ServerLimits) -> ParsedRequest:
    body = _object(body)
    model = _model(body, limits)
    _reject_unsupported(body)
    if get_str(body, "suffix"):
        raise RequestError("`suffix` is not supported", param="suffix")
    prompt_ids, prompt_text = _completion_prompt(body.get("prompt"), tokenizer)
    echo = bool(get_bool(body, "echo"))
    logprobs = get_int(body, "logprobs")
    if logprobs is not None:
        check_range("logprobs", logprobs, low=0, high=5)
        if echo:
            raise RequestError(
                "`echo` together with `logprobs` is not supported: prompt log-probabilities "
                "are not computed",
                param="echo",
            )
    req = _common(body, "completion", model, prompt_ids, tokenizer, limits, ("max_tokens",))
    req.echo_text = prompt_text if echo else None
    req.logprobs = logprobs
    req.sampling.logprobs = logprobs is not None
    return req


def parse_chat(body: Any, tokenizer: ModelTokenizer, limits: ServerLimits) -> ParsedRequest:
    body = _object(body)
    model = _model(body, limits)
    _reject_unsupported(body)
    if body.get("tools") or body.get("functions"):
        raise RequestError("tool and function calling are not supported", param="tools")
    messages = normalize_messages(body.get("messages"))
    add_generation_prompt = get_bool(body, "add_generation_prompt")
    if tokenizer.chat_template is None:
        raise RequestError("this model has no chat template: use /v1/completions", param="messages")
    try:
        prompt_ids = tokenizer.encode_chat(
            messages, add_generation_prompt=add_generation_prompt is not False
        )
    except TemplateError as exc:
        raise RequestError(str(exc), param="messages") from exc
    want_logprobs = bool(get_bool(body, "logprobs"))
    top = get_int(body, "top_logprobs")
    if top:
        raise RequestError(
            "`top_logprobs` > 0 is not supported: only the sampled token's log-probability "
            "is reported",
            param="top_logprobs",
        )
    # max_completion_tokens replaced max_tokens in the chat API; honour both.
    names = ("max_completion_tokens", "max_tokens")
    req = _common(body, "chat", model, prompt_ids, tokenizer, limits, names)
    req.logprobs = 0 if want_logprobs else None
    req.sampling.logprobs = want_logprobs
    return req


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {json_type(body)}")
    return body


def _model(body: dict[str, Any], limits: ServerLimits) -> str:
    # A missing model is allowed (curl users); a wrong one is not.
    name = get_str(body, "model")
    if name is None:
        return limits.model_name
    if name != limits.model_name:
        raise model_not_found(name)
    return name


def _reject_unsupported(body: dict[str, Any]) -> None:
    """Fail loudly on options that would otherwise be silently ignored."""
    for name in ("n", "best_of"):
        value = get_int(body, name)
        if value is not None and value != 1:
            raise RequestError(
                f"`{name}` must be 1: this server generates one choice per request "
                f"(send {value} requests instead)",
                param=name,
            )
    for name, neutral in (
        ("presence_penalty", 0.0),
        ("frequency_penalty", 0.0),
        ("repetition_penalty", 1.0),
    ):
        value = get_float(body, name)
        if value is not None and value != neutral:
            raise RequestError(
                f"`{name}` is not supported (only {neutral} is accepted)", param=name
            )
    if get_dict(body, "logit_bias"):
        raise RequestError("`logit_bias` is not supported", param="logit_bias")
    fmt = get_dict(body, "response_format")
    if fmt is not None and fmt.get("type", "text") != "text":
        raise RequestError("only the `text` response format is supported", param="response_format")


def _completion_prompt(value: Any, tokenizer: ModelTokenizer) -> tuple[list[int], str]:
    if isinstance(value, str):
        return tokenizer.encode(value), value
    if is_int_list(value):
        bad = [t for t in value if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise RequestError(
                f"`prompt` token id {bad[0]} is out of range: the vocabulary has "
                f"{tokenizer.vocab_size} tokens",
                param="prompt",
            )
        return list(value), tokenizer.decode(value, skip_special_tokens=False)
    if (
        isinstance(value, list)
        and len(value) == 1
        and (isinstance(value[0], str) or is_int_list(value[0]))
    ):
        return _completion_prompt(value[0], tokenizer)
    if isinstance(value, list) and all(isinstance(v, str) or is_int_list(v) for v in value):
        raise RequestError(
            f"`prompt` holds {len(value)} prompts: one prompt per request is supported, "
            "send one request per prompt",
            param="prompt",
        )
    if value is None:
        raise RequestError("`prompt` is required", param="prompt")
    raise RequestError(
        f"`prompt` must be a string or an array of token ids, got {json_type(value)}",
        param="prompt",
    )


def _common(
    body: dict[str, Any],
    kind: str,
    model: str,
    prompt_ids: list[int],
    tokenizer: ModelTokenizer,
    limits: ServerLimits,
    max_token_names: tuple[str, ...],
) -> ParsedRequest:
    """Sampling, stop and stream fields shared by both endpoints, and the length checks."""
    max_tokens, max_name = None, max_token_names[0]
    for name in max_token_names:
        max_tokens = get_int(body, name)
        if max_tokens is not None:
            max_name = name
            check_range(name, max_tokens, low=1)
            break
    temperature = get_float(body, "temperature")
    if temperature is not None:
        check_range("temperature", temperature, low=0, high=2)
    top_p = get_float(body, "top_p")
    if top_p is not None:
        check_range("top_p", top_p, low=0, high=1, low_open=True)
    top_k = get_int(body, "top_k")
    if top_k is not None:
        check_range("top_k", top_k, low=-1)
    seed = get_int(body, "seed")
    if seed is not None:
        check_range("seed", seed, low=-_INT64, high=_INT64 - 1)
    min_tokens = get_int(body, "min_tokens") or 0
    check_range("min_tokens", min_tokens, low=0)
    stop = [s for s in get_str_or_str_list(body, "stop") if s]
    stop_token_ids = get_int_list(body, "stop_token_ids")
    for t in stop_token_ids:
        if not 0 <= t < tokenizer.vocab_size:
            raise RequestError(
                f"`stop_token_ids` holds {t}, outside the vocabulary", param="stop_token_ids"
            )
    ignore_eos = bool(get_bool(body, "ignore_eos"))
    stream = bool(get_bool(body, "stream"))
    options = get_dict(body, "stream_options")
    if options is not None and not stream:
        raise RequestError(
            "`stream_options` is only allowed when `stream` is true", param="stream_options"
        )
    include_usage = bool(get_bool(options or {}, "include_usage"))
    max_tokens = _fit_context(kind, len(prompt_ids), max_tokens, limits)
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
    return ParsedRequest(kind, model, prompt_ids, sampling, stop, stream, include_usage)


def _fit_context(kind: str, prompt_len: int, max_tokens: int | None, limits: ServerLimits) -> int:
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
