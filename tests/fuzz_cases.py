"""Random and mutated inputs for the frontend's three doors: HTTP bodies, codec frames,
ZeroMQ client frames. Shared by tests/unit/test_fuzz_inputs.py (driven by hypothesis)
and benchmarks/fuzz_inputs.py (driven by a seeded random.Random, many more cases).

Everything takes a `random.Random`, so a failing case is reproducible from its seed.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

import msgpack

from fastserve.protocol.client import ClientAbort, ClientSubmit
from fastserve.protocol.codec import _HEADER, MESSAGE_TYPES, PROTOCOL_VERSION, Codec
from fastserve.protocol.common import SamplingParams
from fastserve.protocol.to_scheduler import SubmitRequest

TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/completions", {"model": "tiny", "prompt": "Hello", "max_tokens": 4}),
    ("/v1/completions", {"prompt": [5, 6, 7], "max_tokens": 3, "stream": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hey"}]}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
]
FIELDS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "seed", "min_tokens", "stop", "stop_token_ids", "ignore_eos", "stream",
    "stream_options", "echo", "logprobs", "top_logprobs", "n", "best_of", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "logit_bias", "response_format", "suffix",
    "tools", "functions", "user", "add_generation_prompt", "unknown_field",
]  # fmt: skip
NUMERIC_FIELDS = [
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed",
    "min_tokens", "logprobs", "top_logprobs", "n", "best_of", "presence_penalty",
]  # fmt: skip
# Values that broke (or could break) something past the parser: msgpack's 64-bit ints,
# NaN/inf that pass range checks, surrogates the tokenizer refuses.
DANGEROUS: list[Any] = [
    2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -1e308, 1e19, math.nan, math.inf, -math.inf,
    "\ud800", ["\udfff"], [2**64], [10**30, 1],
]  # fmt: skip
INTERESTING: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3.0, 0.5, 1.5, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64,
    -(2**63) - 1, 10**30, 1e308, -1e308, 5e-324, math.nan, math.inf, -math.inf, "", "x",
    "STOP", "\u0000", "🙂", "\ud800", "a" * 300, [], [1, 2], [-1], [399, 400], ["a", "b"],
    [[1]], [None], {}, {"a": 1}, {"include_usage": "yes"}, {"type": "json_object"},
    [{"role": "user"}], [{"role": "", "content": "x"}], [{"role": "user", "content": 5}],
    [{"role": "user", "content": [{"type": "image_url"}]}], ["s"] * 20, list(range(300)),
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", None, "text/plain", "application/x-www-form-urlencoded",
    "application/json; charset=latin-1", "application/json; charset=nonsense",
    "multipart/form-data; boundary=xyz", "application/json; charset=utf-16",
]  # fmt: skip
PATHS = ["/v1/completions", "/v1/chat/completions"]
_RAW_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"\\ud800"', b"9" * 5000, b"-0"]


@dataclass
class HttpCase:
    path: str
    body: bytes
    content_type: str | None


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    """An interesting constant, or a small random JSON value."""
    roll = rnd.random()
    if roll < 0.6 or depth > 3:
        return rnd.choice(INTERESTING)
    if roll < 0.7:
        return rnd.randint(-(2**70), 2**70)
    if roll < 0.8:
        return "".join(chr(rnd.randint(0, 0x10FFFF)) for _ in range(rnd.randint(0, 8)))
    if roll < 0.9:
        return [random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {rnd.choice(FIELDS): random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))}


def mutate_body(rnd: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))  # a deep copy
    # Mostly one change: a valid request with one bad field gets furthest into the server.
    for _ in range(1 if rnd.random() < 0.7 else rnd.randint(2, 4)):
        action = rnd.random()
        if action < 0.6:
            # Numbers and awkward values are what crashed servers before: weigh them up.
            name = rnd.choice(NUMERIC_FIELDS if rnd.random() < 0.5 else FIELDS)
            value = rnd.choice(DANGEROUS) if rnd.random() < 0.3 else random_value(rnd)
            body[name] = value
        elif action < 0.75 and body:
            body.pop(rnd.choice(list(body)))
        elif action < 0.9 and isinstance(body.get("messages"), list) and body["messages"]:
            msg = body["messages"][0]
            if isinstance(msg, dict):
                msg[rnd.choice(["role", "content", "name", "tool_calls"])] = random_value(rnd)
        else:
            body[f"x{rnd.randint(0, 9)}"] = random_value(rnd)
    return body


def mutate_bytes(rnd: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        action = rnd.random()
        pos = rnd.randint(0, len(out))
        if action < 0.3 and out:
            out[min(pos, len(out) - 1)] = rnd.randint(0, 255)
        elif action < 0.5:
            out[pos:pos] = bytes(rnd.randint(0, 255) for _ in range(rnd.randint(1, 4)))
        elif action < 0.65:
            del out[pos:]
        elif action < 0.8:
            out[pos:pos] = rnd.choice(_RAW_TOKENS)
        elif out:
            start = rnd.randint(0, len(out) - 1)
            out[pos:pos] = out[start : start + rnd.randint(1, 16)]
    return bytes(out)


def random_json_text(rnd: random.Random) -> tuple[str, bytes]:
    """(endpoint path, JSON bytes): a mutated valid body, raw bytes, or deep nesting."""
    path, template = rnd.choice(TEMPLATES)
    roll = rnd.random()
    if roll < 0.55:
        return path, json.dumps(mutate_body(rnd, template)).encode("utf-8", "surrogatepass")
    if roll < 0.85:
        return path, mutate_bytes(rnd, json.dumps(template).encode())
    if roll < 0.95:
        depth = rnd.choice([10, 65, 1000, 5000])
        field = rnd.choice(["prompt", "messages", "stop", "x"])
        inner = b"[" * depth + b"1" + b"]" * depth
        return path, b'{"' + field.encode() + b'": ' + inner + b"}"
    return path, json.dumps(random_value(rnd)).encode("utf-8", "surrogatepass")


def random_http_case(rnd: random.Random) -> HttpCase:
    path, body = random_json_text(rnd)
    if rnd.random() < 0.1:
        path = rnd.choice(PATHS)
    content_type = rnd.choice(CONTENT_TYPES) if rnd.random() < 0.4 else "application/json"
    return HttpCase(path, body, content_type)


def _valid_frames() -> list[bytes]:
    codec = Codec()
    body = json.dumps({"prompt": "ok", "max_tokens": 2})
    return [
        codec.encode(ClientSubmit("a", "completion", body)),
        codec.encode(ClientSubmit("b", "chat", json.dumps(TEMPLATES[2][1]))),
        codec.encode(ClientAbort("a")),
        codec.encode(SubmitRequest("r", [1, 2], SamplingParams(), 0.0)),
    ]


VALID_FRAMES = _valid_frames()


def _wire_value(rnd: random.Random, depth: int = 0) -> Any:
    roll = rnd.random()
    if roll < 0.15:
        return rnd.choice([0, -1, 2**64 - 1, -(2**63), rnd.randint(-(2**63), 2**64 - 1)])
    if roll < 0.25:
        return rnd.choice([0.5, math.nan, math.inf, -0.0])
    if roll < 0.35:
        return rnd.choice(["", "completion", "chat", "\x00", "é" * 3])
    if roll < 0.4:
        return bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 6)))
    if roll < 0.45:
        return rnd.choice([None, True, False, msgpack.ExtType(rnd.randint(-128, 127), b"zz")])
    if roll < 0.55 or depth > 3:
        return json.dumps(random_value(rnd))
    if roll < 0.85:
        return [_wire_value(rnd, depth + 1) for _ in range(rnd.randint(0, 5))]
    return {_wire_value(rnd, 9) if rnd.random() < 0.5 else "k": _wire_value(rnd, depth + 1)}


def random_frame(rnd: random.Random) -> bytes:
    """One codec frame: random bytes, a mutated valid frame, or a typed random msgpack body."""
    roll = rnd.random()
    if roll < 0.15:
        return bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 40)))
    if roll < 0.45:
        return mutate_bytes(rnd, rnd.choice(VALID_FRAMES))
    if roll < 0.6:  # a client message whose body text is a fuzzed HTTP body
        kind = rnd.choice(["completion", "chat", "embedding", ""])
        text = random_json_text(rnd)[1].decode("utf-8", "replace")
        return Codec().encode(ClientSubmit(f"f{rnd.randint(0, 50)}", kind, text))
    code = rnd.choice([*MESSAGE_TYPES, 0, 255]) if rnd.random() < 0.9 else 50
    version = PROTOCOL_VERSION if rnd.random() < 0.9 else rnd.randint(0, 255)
    header = _HEADER.pack(code, version, rnd.randint(0, 2**64 - 1))
    try:
        body = msgpack.packb(_wire_value(rnd), use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        body = b"\xc1"
    return header + body


def random_multipart(rnd: random.Random) -> list[bytes]:
    """What a DEALER may send: usually one frame, sometimes none or extra ones."""
    roll = rnd.random()
    if roll < 0.85:
        return [random_frame(rnd)]
    if roll < 0.9:
        return [b""]
    return [random_frame(rnd) for _ in range(rnd.randint(2, 3))]
