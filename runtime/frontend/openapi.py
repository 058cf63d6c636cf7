"""GET /openapi.json: an OpenAPI 3.0 description of what this server really accepts.

Numbers and their bounds come from request_fields (the table the parser enforces), the
model name, context and vocabulary from the running service: the document cannot promise
a bound the parser does not check, or miss one it does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from fastserve.runtime.frontend import request_fields as rf
from fastserve.runtime.frontend.app import MAX_BODY_BYTES, SERVICE_KEY
from fastserve.runtime.frontend.json_body import MAX_JSON_DEPTH
from fastserve.runtime.frontend.tool_request import MAX_TOOLS

if TYPE_CHECKING:
    from fastserve.runtime.frontend.service import FrontendService

Schema = dict[str, Any]
_ERRORS = {
    "400": "invalid request (the message names the field)",
    "401": "missing or wrong API key (only when the server has keys)",
    "404": "unknown model",
    "413": f"body larger than {MAX_BODY_BYTES} bytes",
    "429": "overloaded: retry after the Retry-After header's seconds",
    "503": "starting or draining before shutdown",
    "500": "the request failed in the engine",
}


async def handle_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SERVICE_KEY]))


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _token_ids(max_items: int, vocab: int, doc: str) -> Schema:
    item = {"type": "integer", "minimum": 0, "maximum": vocab - 1}
    return {"type": "array", "items": item, "maxItems": max_items, "description": doc}


def _numbers(specs: tuple[rf.Number, ...], ctx: int) -> dict[str, Schema]:
    out = {}
    for spec in specs:
        schema = spec.schema()
        if spec in (rf.MAX_TOKENS, rf.MAX_COMPLETION_TOKENS, rf.MIN_TOKENS):
            schema["maximum"] = ctx  # the context bounds them (prompt + max_tokens <= ctx)
        out[spec.name] = schema
    return out


def _common_properties(service: FrontendService) -> dict[str, Schema]:
    vocab = service.tokenizer.vocab_size
    stop_string = {"type": "string", "maxLength": rf.MAX_STOP_CHARS}
    return {
        "model": {"type": "string", "enum": [service.limits.model_name], "nullable": True},
        "stop": {
            "oneOf": [
                stop_string,
                {"type": "array", "items": stop_string, "maxItems": rf.MAX_STOP_STRINGS},
            ],
            "nullable": True,
            "description": "output ends before the first of these strings",
        },
        "stop_token_ids": _token_ids(rf.MAX_STOP_TOKEN_IDS, vocab, "extra ids that end it"),
        "ignore_eos": {"type": "boolean", "nullable": True},
        "stream": {"type": "boolean", "nullable": True, "description": "server-sent events"},
        "stream_options": {
            "type": "object",
            "nullable": True,
            "properties": {"include_usage": {"type": "boolean", "nullable": True}},
            "description": "only with stream: true",
        },
        "logit_bias": {"type": "object", "nullable": True, "description": "only {} (empty)"},
        "response_format": {
            "type": "object",
            "nullable": True,
            "required": ["type"],
            "properties": {
                "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
                "json_schema": {
                    "type": "object",
                    "required": ["schema"],
                    "properties": {
                        "name": {"type": "string"},
                        "schema": {"type": "object"},
                        "strict": {"type": "boolean", "nullable": True},
                    },
                },
            },
            "description": "structured output: the output is forced to match (llguidance); "
            "an invalid schema is a 400",
        },
        "user": {"type": "string", "nullable": True, "description": "ignored"},
    }


def _request_schemas(service: FrontendService) -> dict[str, Schema]:
    ctx, vocab = service.limits.max_model_len, service.tokenizer.vocab_size
    text = {"type": "string", "maxLength": ctx * rf.MAX_CHARS_PER_TOKEN}
    ids = _token_ids(ctx, vocab, "token ids")
    prompt = {
        "oneOf": [
            text,
            ids,
            {"type": "array", "minItems": 1, "maxItems": 1, "items": {"oneOf": [text, ids]}},
        ],
        "description": "one prompt: text or token ids (a list of one is accepted too)",
    }
    completion = {
        "prompt": prompt,
        "echo": {
            "type": "boolean",
            "nullable": True,
            "description": "prepend the prompt; with logprobs, its tokens' logprobs too (the "
            "first null); with max_tokens 0, the prompt only",
        },
        "suffix": {"type": "string", "nullable": True, "description": "only empty"},
        **_numbers(rf.COMPLETION_NUMBERS, ctx),
        **_common_properties(service),
    }
    part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}},
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "minLength": 1},
            "content": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": part}],
                "nullable": True,
            },
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
            "tool_call_id": {"type": "string"},
        },
    }
    tool = {
        "type": "object",
        "required": ["type", "function"],
        "properties": {
            "type": {"type": "string", "enum": ["function"]},
            "function": _object(
                {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                    "description": {"type": "string"},
                    "parameters": {"type": "object", "description": "a JSON schema"},
                },
                ["name"],
            ),
        },
    }
    chat = {
        "messages": {"type": "array", "items": message, "minItems": 1, "maxItems": ctx},
        "add_generation_prompt": {"type": "boolean", "nullable": True},
        "logprobs": {"type": "boolean", "nullable": True},
        "tools": {"type": "array", "items": tool, "maxItems": MAX_TOOLS, "nullable": True},
        "tool_choice": {
            "oneOf": [
                {"type": "string", "enum": ["none", "auto", "required"]},
                {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"type": "string", "enum": ["function"]},
                        "function": _object({"name": {"type": "string"}}, ["name"]),
                    },
                },
            ],
            "nullable": True,
            "description": 'default "auto" with tools; "required" or a named function forces '
            "one call (by grammar)",
        },
        "parallel_tool_calls": {"type": "boolean", "nullable": True},
        **_numbers(rf.CHAT_NUMBERS, ctx),
        **_common_properties(service),
    }
    # Unknown fields are ignored, as OpenAI-compatible servers do.
    return {
        "CompletionRequest": _object(completion, ["prompt"]),
        "ChatCompletionRequest": _object(chat, ["messages"]),
        "Error": _object(
            {
                "error": _object(
                    {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": "string", "nullable": True},
                        "code": {"type": "string", "nullable": True},
                    },
                    ["message", "type"],
                )
            },
            ["error"],
        ),
    }


def _object(properties: dict[str, Schema], required: list[str]) -> Schema:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": True,
    }


def _responses(ok: Schema, *, streams: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": ok}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    out: dict[str, Any] = {"200": {"description": "success", "content": content}}
    error = {"application/json": {"schema": _ref("Error")}}
    for status, why in _ERRORS.items():
        out[status] = {"description": why, "content": error}
    return out


def _post(summary: str, schema: str) -> dict[str, Any]:
    body = {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}
    return {
        "post": {
            "summary": summary,
            "requestBody": body,
            "responses": _responses({"type": "object"}, streams=True),
        }
    }


def _get(summary: str, media: str = "application/json", open_: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "success", "content": {media: {}}}},
    }
    if open_:
        op["security"] = []  # no key needed, even when the server has keys
    return {"get": op}


def openapi_document(service: FrontendService) -> dict[str, Any]:
    opts = service.options
    paths = {
        "/v1/completions": _post("text completion", "CompletionRequest"),
        "/v1/chat/completions": _post("chat completion", "ChatCompletionRequest"),
        "/v1/models": _get("the served model"),
        "/v1/ws": _get(
            "websocket: many requests on one connection. Client frames: "
            '{"type": "auth", "api_key"} (first, when the server has keys and no '
            'Authorization header was sent), {"id", "type": "completion"|"chat", "body"}, '
            '{"id", "type": "abort"}. Server frames: delta, done, error (with status).'
        ),
        "/health": _get("ok / starting / draining (503 unless ok)", open_=True),
        "/metrics": _get("Prometheus text", "text/plain", open_=opts.metrics_public),
        "/dashboard": _get("live dashboard (an HTML page polling /dashboard/data)", "text/html",
                           open_=True),
        "/dashboard/data": _get("the dashboard's JSON: state, history, latency percentiles",
                                open_=opts.metrics_public),
        "/openapi.json": _get("this document", open_=True),
    }
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "FastServe OpenAI-compatible API",
            "version": "1",
            "description": (
                f"Serves `{service.limits.model_name}` (context {service.limits.max_model_len} "
                f"tokens, vocabulary {service.tokenizer.vocab_size}). JSON bodies are UTF-8, "
                f"at most {MAX_BODY_BYTES} bytes and {MAX_JSON_DEPTH} levels deep; numbers "
                "must be finite."
            ),
        },
        "paths": paths,
        "components": {"schemas": _request_schemas(service)},
    }
    if opts.api_keys:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
