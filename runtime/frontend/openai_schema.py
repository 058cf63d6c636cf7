"""Parsing and validation of /v1/completions and /v1/chat/completions bodies.

Everything a client can get wrong is caught here, so bad input never reaches the scheduler.
The result is a ParsedRequest: prompt token ids, SamplingParams, stop strings, stream flags.
"""

from __future__ import annotations

from typing import Any

from fastserve.runtime.frontend import request_fields as rf
from fastserve.runtime.frontend.chat_messages import normalize_messages
from fastserve.runtime.frontend.chat_template import TemplateError
from fastserve.runtime.frontend.errors import RequestError, model_not_found
from fastserve.runtime.frontend.fields import (
    get_bool,
    get_dict,
    get_float,
    get_int,
    get_str,
    is_int_list,
    json_type,
)
from fastserve.runtime.frontend.parsed_request import ParsedRequest, ServerLimits
from fastserve.runtime.frontend.sampling_fields import common_fields, fit_context
from fastserve.runtime.frontend.tokenizer import ModelTokenizer

__all__ = ["ParsedRequest", "ServerLimits", "parse_chat", "parse_completion", "parse_request"]


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
    prompt_ids, prompt_text = _completion_prompt(body.get("prompt"), tokenizer, limits)
    echo = bool(get_bool(body, "echo"))
    logprobs = rf.LOGPROBS.read(body)
    if logprobs is not None and echo:
        raise RequestError(
            "`echo` together with `logprobs` is not supported: prompt log-probabilities "
            "are not computed",
            param="echo",
        )
    req = common_fields(body, "completion", model, prompt_ids, tokenizer, limits, (rf.MAX_TOKENS,))
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
    _check_messages_size(messages, limits)
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
    top = get_int(body, rf.TOP_LOGPROBS.name)
    if top:
        raise RequestError(
            "`top_logprobs` > 0 is not supported: only the sampled token's log-probability "
            "is reported",
            param="top_logprobs",
        )
    # max_completion_tokens replaced max_tokens in the chat API; honour both.
    names = (rf.MAX_COMPLETION_TOKENS, rf.MAX_TOKENS)
    req = common_fields(body, "chat", model, prompt_ids, tokenizer, limits, names)
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


def _check_messages_size(messages: list[dict[str, Any]], limits: ServerLimits) -> None:
    # Every message costs at least one token in any template, so more messages than the
    # context holds tokens can never fit; and their text is bounded like a prompt's.
    if len(messages) > limits.max_model_len:
        raise RequestError(
            f"`messages` holds {len(messages)} messages, more than this model's context of "
            f"{limits.max_model_len} tokens can hold",
            param="messages",
        )
    chars = sum(len(m["content"]) for m in messages)
    rf.check_text_length("messages", chars, limits.max_model_len)


def _reject_unsupported(body: dict[str, Any]) -> None:
    """Fail loudly on options that would otherwise be silently ignored."""
    for spec in rf.ONE_CHOICE:
        value = get_int(body, spec.name)
        if value is not None and value != 1:
            raise RequestError(
                f"`{spec.name}` must be 1: this server generates one choice per request "
                f"(send {value} requests instead)",
                param=spec.name,
            )
    for spec in rf.NEUTRAL_ONLY:
        value = get_float(body, spec.name)
        if value is not None and value != spec.low:
            raise RequestError(
                f"`{spec.name}` is not supported (only {float(spec.low or 0)} is accepted)",
                param=spec.name,
            )
    if get_dict(body, "logit_bias"):
        raise RequestError("`logit_bias` is not supported", param="logit_bias")
    fmt = get_dict(body, "response_format")
    if fmt is not None and fmt.get("type", "text") != "text":
        raise RequestError("only the `text` response format is supported", param="response_format")


def _completion_prompt(
    value: Any, tokenizer: ModelTokenizer, limits: ServerLimits
) -> tuple[list[int], str]:
    if isinstance(value, str):
        rf.check_text_length("prompt", len(value), limits.max_model_len)
        return tokenizer.encode(value), value
    if is_int_list(value):
        if len(value) >= limits.max_model_len:
            fit_context("completion", len(value), None, limits)  # the context error, early
        rf.check_token_ids("prompt", value, tokenizer.vocab_size, limits.max_model_len)
        return list(value), tokenizer.decode(value, skip_special_tokens=False)
    if (
        isinstance(value, list)
        and len(value) == 1
        and (isinstance(value[0], str) or is_int_list(value[0]))
    ):
        return _completion_prompt(value[0], tokenizer, limits)
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
