"""Parsing and validation of /v1/completions and /v1/chat/completions bodies.

Everything a client can get wrong is caught here, so bad input never reaches the scheduler.
The result is a ParsedRequest: prompt token ids, SamplingParams (with the grammar of a
structured output or forced tool call, already validated), stop strings, stream flags,
choices and tools.
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
from fastserve.runtime.frontend.guided import response_format_grammar
from fastserve.runtime.frontend.parsed_request import ParsedRequest, ServerLimits
from fastserve.runtime.frontend.sampling_fields import common_fields, fit_context
from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from fastserve.runtime.frontend.tool_request import forced_grammar, parse_tools, prompt_messages

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
    # Evaluation harnesses score prompts with echo and max_tokens 0: one token is generated
    # to get the prompt computed, and not returned.
    echo_only = echo and get_int(body, rf.MAX_TOKENS.name) == 0
    if echo_only:
        body = {**body, rf.MAX_TOKENS.name: 1}
    req = common_fields(body, "completion", model, prompt_ids, tokenizer, limits, (rf.MAX_TOKENS,))
    req.echo_text = prompt_text if echo else None
    req.echo_only = echo_only
    req.logprobs = logprobs
    req.sampling.logprobs = logprobs is not None
    req.sampling.top_logprobs = logprobs or 0
    if echo and logprobs is not None:
        req.sampling.prompt_logprobs = logprobs
    req.sampling.grammar = response_format_grammar(body, tokenizer)
    _choices(body, req, rf.BEST_OF.read(body))
    return req


def parse_chat(body: Any, tokenizer: ModelTokenizer, limits: ServerLimits) -> ParsedRequest:
    body = _object(body)
    model = _model(body, limits)
    _reject_unsupported(body)
    messages = normalize_messages(body.get("messages"))
    _check_messages_size(messages, limits)
    add_generation_prompt = get_bool(body, "add_generation_prompt")
    if tokenizer.chat_template is None:
        raise RequestError("this model has no chat template: use /v1/completions", param="messages")
    tools = parse_tools(body, tokenizer)
    messages, template_tools = prompt_messages(messages, tools, tokenizer)
    try:
        prompt_ids = tokenizer.encode_chat(
            messages, add_generation_prompt=add_generation_prompt is not False, tools=template_tools
        )
    except TemplateError as exc:
        raise RequestError(str(exc), param="messages") from exc
    want_logprobs = bool(get_bool(body, "logprobs"))
    top = rf.TOP_LOGPROBS.read(body) or 0
    if top and not want_logprobs:
        # Named after the field to fix: `logprobs` is what is missing.
        raise RequestError("`top_logprobs` needs `logprobs` set to true", param="logprobs")
    # max_completion_tokens replaced max_tokens in the chat API; honour both.
    names = (rf.MAX_COMPLETION_TOKENS, rf.MAX_TOKENS)
    req = common_fields(body, "chat", model, prompt_ids, tokenizer, limits, names)
    req.logprobs = top if want_logprobs else None
    req.sampling.logprobs = want_logprobs
    req.sampling.top_logprobs = top
    req.tools = tools
    grammar = response_format_grammar(body, tokenizer)
    forced = forced_grammar(tools, tokenizer) if tools is not None else None
    if grammar is not None and forced is not None:
        raise RequestError(
            "`response_format` cannot be combined with a `tool_choice` that forces a call",
            param="response_format",
        )
    req.sampling.grammar = forced or grammar
    _choices(body, req, None)
    return req


def _choices(body: dict[str, Any], req: ParsedRequest, best_of: int | None) -> None:
    """n choices, each a job of its own; best_of (completions) generates more and keeps
    the n likeliest."""
    n = rf.N.read(body) or 1
    best_of = n if best_of is None else best_of
    if best_of < n:
        raise RequestError(
            f"`best_of` ({best_of}) must be at least `n` ({n})", param=rf.BEST_OF.name
        )
    if best_of > n and req.stream:
        raise RequestError("`best_of` > `n` cannot be streamed", param=rf.BEST_OF.name)
    req.n, req.best_of = n, best_of
    if best_of > n:
        req.sampling.logprobs = True  # to rank the candidates; reported only when asked


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
    for spec in rf.NEUTRAL_ONLY:
        value = get_float(body, spec.name)
        if value is not None and value != spec.low:
            raise RequestError(
                f"`{spec.name}` is not supported (only {float(spec.low or 0)} is accepted)",
                param=spec.name,
            )
    if get_dict(body, "logit_bias"):
        raise RequestError("`logit_bias` is not supported", param="logit_bias")


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
