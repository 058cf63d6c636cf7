"""Every numeric and list field is bounded, and what passes always fits the wire format."""

from __future__ import annotations

import pytest

from fastserve.protocol.codec import Codec
from fastserve.protocol.to_scheduler import SubmitRequest
from fastserve.runtime.frontend import request_fields as rf
from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.json_body import MAX_JSON_DEPTH, load_json
from fastserve.runtime.frontend.openai_schema import ServerLimits, parse_chat, parse_completion

LIMITS = ServerLimits(model_name="tiny", max_model_len=100, default_max_tokens=30)
HUGE = [10**30, 2**64, 1e308, -(10**30), -1e308]


def completion(tok, **fields):
    return parse_completion({"prompt": "Hello world", **fields}, tok, LIMITS)


def chat(tok, **fields):
    return parse_chat({"messages": [{"role": "user", "content": "hi"}], **fields}, tok, LIMITS)


def rejection(fn, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    assert info.value.status == 400
    return info.value


def encodes(req) -> None:
    """What the parser accepts reaches the scheduler: it must survive msgpack, and hold
    only values the sampler and scheduler are built for."""
    Codec().encode(SubmitRequest("r", req.prompt_ids, req.sampling, 0.0))
    s = req.sampling
    assert 0 <= s.temperature <= 2 and 0 < s.top_p <= 1
    assert s.top_k == -1 or 1 <= s.top_k <= rf.INT32_MAX
    assert s.max_tokens >= 1 and len(req.prompt_ids) + s.max_tokens <= LIMITS.max_model_len
    assert 0 <= s.min_tokens <= s.max_tokens
    assert s.seed is None or rf.INT64_MIN <= s.seed <= rf.INT64_MAX
    assert all(0 <= t < 400 for t in [*s.stop_token_ids, *req.prompt_ids])
    assert len(req.stop) <= rf.MAX_STOP_STRINGS


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    ("field", "param"),
    [
        ("top_k", "top_k"),
        ("seed", "seed"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("min_tokens", "min_tokens"),
        ("max_tokens", None),  # huge: the context error (param prompt); negative: max_tokens
        ("logprobs", "logprobs"),
        ("n", "n"),
        ("best_of", "best_of"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ],
)
def test_huge_numbers_are_400s_naming_the_field(tok, field, param, value):
    err = rejection(completion, tok, **{field: value})
    assert err.param == (param or ("prompt" if value > 0 else "max_tokens"))


@pytest.mark.parametrize("value", HUGE)
def test_huge_numbers_in_chat(tok, value):
    for field in ("max_completion_tokens", "top_k", "top_logprobs", "seed"):
        err = rejection(chat, tok, **{field: value})
        assert err.param in (field, "messages")


def test_extreme_accepted_values_fit_the_wire(tok):
    for req in (
        completion(tok, top_k=rf.INT32_MAX, seed=rf.INT64_MAX, temperature=2, top_p=1),
        completion(tok, top_k=-1, seed=rf.INT64_MIN, min_tokens=5, max_tokens=5),
        completion(tok, prompt=[0] * 99, logprobs=5, stop_token_ids=[399] * 256),
        chat(tok, max_completion_tokens=50, stop=["x" * 256] * 16),
    ):
        encodes(req)
    assert completion(tok, top_k=1e9).sampling.top_k == 10**9  # 1e9 is an integer
    assert rejection(completion, tok, top_k=rf.INT32_MAX + 1).param == "top_k"
    assert rejection(completion, tok, seed=rf.INT64_MAX + 1).param == "seed"


def test_list_bounds(tok):
    assert "17 strings" in rejection(completion, tok, stop=["a"] * 17).message
    assert "257 characters" in rejection(completion, tok, stop="b" * 257).message
    err = rejection(completion, tok, stop_token_ids=[1] * 257)
    assert err.param == "stop_token_ids" and "257 token ids" in err.message
    assert "token id -1" in rejection(completion, tok, stop_token_ids=[-1]).message
    assert "token id 400" in rejection(completion, tok, stop_token_ids=[400]).message
    assert f"token id {2**70} is out" in rejection(completion, tok, prompt=[5, 2**70]).message


def test_long_inputs_are_refused_before_tokenizing(tok):
    err = rejection(completion, tok, prompt="x" * (100 * rf.MAX_CHARS_PER_TOKEN + 1))
    assert err.param == "prompt" and "characters long" in err.message
    err = rejection(completion, tok, prompt=[5] * 10**6)
    assert err.param == "prompt" and "maximum context length is 100" in err.message
    err = rejection(chat, tok, messages=[{"role": "user", "content": "y"}] * 101)
    assert err.param == "messages" and "101 messages" in err.message
    err = rejection(chat, tok, messages=[{"role": "user", "content": "y" * 10**6}])
    assert err.param == "messages" and "characters long" in err.message


def test_unknown_fields_are_ignored_and_unsupported_ones_refused(tok):
    req = completion(tok, foo={"bar": [1, 2]}, user="u", metadata=None, max_tokens=3)
    assert req.sampling.max_tokens == 3
    assert "`tools[0].function` must be" in rejection(chat, tok, tools=[{"type": "function"}]).message
    assert "and at most 32, got 33" in rejection(chat, tok, n=33).message
    assert "needs `logprobs`" in rejection(chat, tok, top_logprobs=3).message
    assert "deprecated" in rejection(chat, tok, functions=[{"name": "f"}]).message
    assert "must be at least `n`" in rejection(completion, tok, n=3, best_of=2).message
    assert "cannot be streamed" in rejection(completion, tok, best_of=2, stream=True).message
    assert rejection(completion, tok, max_tokens=0).param == "max_tokens"  # 0 only with echo


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"temperature": NaN}', "NaN is not valid JSON"),
        (b'{"temperature": Infinity}', "Infinity is not valid JSON"),
        (b'{"top_p": -Infinity}', "-Infinity is not valid JSON"),
        (b'{"top_k": 1e999}', "out of range"),
        (b'{"prompt": "a\\ud800b"}', "unpaired UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "unpaired UTF-16 surrogate"),
        (b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}", "could not parse"),
        (b"", "could not parse"),
    ],
)
def test_load_json_refuses_what_would_crash_later(raw, expected):
    with pytest.raises(RequestError) as info:
        load_json(raw)
    assert info.value.status == 400 and expected in info.value.message


def test_load_json_accepts_clean_json():
    assert load_json(b'{"prompt": "h\\u00e9 \\ud83d\\ude00", "x": 1.5}') == {
        "prompt": "hé 😀",
        "x": 1.5,
    }
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert load_json(deep) is not None


def test_every_field_with_every_interesting_value(tok):
    """A systematic sweep (the fuzzers sample it): each field of a valid request set to
    each awkward value either parses into something the codec can send, or is a 4xx."""
    from fastserve.runtime.frontend.json_body import check_json_value
    from tests.fuzz_cases import FIELDS, INTERESTING, TEMPLATES

    parsers = {"/v1/completions": parse_completion, "/v1/chat/completions": parse_chat}
    outcomes = {"ok": 0, "4xx": 0}
    for path, template in TEMPLATES[:3]:
        for name in FIELDS:
            for value in INTERESTING:
                body = {**template, name: value}
                try:
                    check_json_value(body)  # what load_json checks after decoding
                    encodes(parsers[path](body, tok, LIMITS))
                    outcomes["ok"] += 1
                except RequestError as exc:
                    assert 400 <= exc.status < 500
                    outcomes["4xx"] += 1
    assert outcomes["ok"] > 100 and outcomes["4xx"] > 100  # both kinds really occurred
