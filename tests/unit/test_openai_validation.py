"""Request validation: every client mistake becomes a clear OpenAI-shaped 4xx error."""

from __future__ import annotations

import pytest

from fastserve.runtime.frontend.errors import RequestError
from fastserve.runtime.frontend.openai_schema import ServerLimits, parse_chat, parse_completion

LIMITS = ServerLimits(model_name="tiny", max_model_len=100, default_max_tokens=30)


def completion(tok, **fields):
    return parse_completion({"model": "tiny", "prompt": "Hello world", **fields}, tok, LIMITS)


def chat(tok, **fields):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **fields}
    return parse_chat(body, tok, LIMITS)


def error_of(fn, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    body = info.value.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return info.value


def test_valid_completion_fields(tok):
    req = completion(
        tok, max_tokens=5, temperature=0, top_p=0.5, top_k=0, seed=7, stop="END",
        min_tokens=2, stream=True, stream_options={"include_usage": True}, user="u",
    )  # fmt: skip
    assert req.prompt_ids == tok.encode("Hello world")
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed, s.min_tokens) == (
        5,
        0,
        0.5,
        -1,
        7,
        2,
    )
    assert req.stop == ["END"] and req.stream and req.include_usage
    assert s.stop_token_ids == list(tok.eos_token_ids)  # the tokenizer's EOS always ends it
    assert completion(tok, ignore_eos=True, stop_token_ids=[5]).sampling.stop_token_ids == [5]


def test_default_max_tokens_is_capped_by_the_room_left(tok):
    assert completion(tok).sampling.max_tokens == 30
    long_prompt = list(range(3, 3 + 90))
    assert completion(tok, prompt=long_prompt).sampling.max_tokens == 10


def test_context_overflow_names_both_numbers(tok):
    n = len(tok.encode("Hello world"))
    err = error_of(completion, tok, max_tokens=100)
    assert err.status == 400 and err.param == "prompt"
    assert err.message.startswith(
        f"This model's maximum context length is 100 tokens. However, you requested "
        f"{n + 100} tokens ({n} in the prompt, 100 in the completion)."
    )
    m = len(tok.encode_chat([{"role": "user", "content": "hi"}]))
    assert (
        f"({m} in the messages, 95 in the completion)" in error_of(chat, tok, max_tokens=95).message
    )


def test_prompt_filling_the_context_without_max_tokens(tok):
    err = error_of(completion, tok, prompt=[5] * 100)
    assert "maximum context length is 100 tokens" in err.message
    assert "100 tokens in the prompt" in err.message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", "10", "`max_tokens` must be an integer, got string"),
        ("max_tokens", 1.5, "`max_tokens` must be an integer, got number"),
        ("temperature", "hot", "`temperature` must be a number, got string"),
        ("top_p", True, "`top_p` must be a number, got boolean"),
        ("stream", "yes", "`stream` must be a boolean, got string"),
        ("stop", 5, "`stop` must be a string or an array of strings, got integer"),
        ("stop_token_ids", ["a"], "`stop_token_ids` must be an array of integers, got array"),
        ("seed", "1", "`seed` must be an integer, got string"),
        ("prompt", 5, "`prompt` must be a string or an array of token ids, got integer"),
        ("stream_options", [], "`stream_options` must be an object, got array"),
    ],
)
def test_wrong_types_name_the_field_and_the_expected_type(tok, field, value, expected):
    err = error_of(completion, tok, **{field: value})
    assert err.status == 400 and err.message == expected and err.param == field


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", 0, "`max_tokens` must be at least 1, got 0"),
        ("max_tokens", -5, "`max_tokens` must be at least 1, got -5"),
        ("temperature", -0.1, "`temperature` must be at least 0 and at most 2, got -0.1"),
        ("temperature", 2.5, "`temperature` must be at least 0 and at most 2, got 2.5"),
        ("top_p", 0, "`top_p` must be greater than 0 and at most 1, got 0.0"),
        ("top_p", 1.01, "`top_p` must be greater than 0 and at most 1, got 1.01"),
        ("top_k", -2, "`top_k` must be at least -1 and at most 2147483647, got -2"),
        ("min_tokens", -1, "`min_tokens` must be at least 0, got -1"),
    ],
)
def test_out_of_range_values(tok, field, value, expected):
    err = error_of(completion, tok, **{field: value})
    assert err.status == 400 and err.message == expected


def test_unknown_model_is_404(tok):
    err = error_of(completion, tok, model="gpt-4")
    assert (err.status, err.message, err.code) == (
        404,
        "The model `gpt-4` does not exist.",
        "model_not_found",
    )
    assert completion(tok, model=None).model == "tiny"  # omitted model: the served one


def test_n_choices_are_bounded(tok):
    assert completion(tok, n=3).n == 3 and chat(tok, n=2).n == 2
    assert completion(tok, n=1).sampling.max_tokens == 30
    assert "n" in error_of(chat, tok, n=10_000).param
    assert "at least `n`" in error_of(completion, tok, n=3, best_of=2).message
    assert "cannot be streamed" in error_of(completion, tok, n=1, best_of=2, stream=True).message


def test_prompt_shapes(tok):
    assert completion(tok, prompt=["Hello"]).prompt_ids == tok.encode("Hello")
    assert completion(tok, prompt=[[5, 6]]).prompt_ids == [5, 6]
    assert "2 prompts" in error_of(completion, tok, prompt=["a", "b"]).message
    assert "out of range" in error_of(completion, tok, prompt=[5, 100000]).message
    assert "empty" in error_of(completion, tok, prompt="").message
    assert "`prompt` is required" in error_of(completion, tok, prompt=None).message


def test_other_rejections(tok):
    assert (
        "only allowed when `stream` is true"
        in error_of(completion, tok, stream_options={"include_usage": True}).message
    )
    assert (
        "must not exceed `max_tokens` (3)"
        in error_of(completion, tok, max_tokens=3, min_tokens=4).message
    )
    assert "not supported" in error_of(completion, tok, presence_penalty=0.5).message
    assert completion(tok, echo=True, logprobs=1).sampling.prompt_logprobs  # lm-eval's shape
    assert "must be a JSON object" in error_of(parse_completion, [1], tok, LIMITS).message


def test_chat_fields(tok):
    assert chat(tok, max_completion_tokens=7, max_tokens=9).sampling.max_tokens == 7
    assert chat(tok, max_tokens=9).sampling.max_tokens == 9
    parts = [{"type": "text", "text": "hi"}]
    assert (
        chat(tok, messages=[{"role": "user", "content": parts}]).prompt_ids == chat(tok).prompt_ids
    )
    assert chat(tok, logprobs=True).sampling.logprobs


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([], "`messages` must be a non-empty array of message objects, got an empty array"),
        ("hi", "`messages` must be a non-empty array of message objects, got string"),
        ([{"content": "x"}], "`messages[0].role` must be a non-empty string, got null"),
        ([{"role": "user", "content": 3}], "`messages[0].content` must be a string or an array"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "only text content parts"),
    ],
)
def test_bad_messages(tok, messages, expected):
    err = error_of(chat, tok, messages=messages)
    assert err.status == 400 and expected in err.message
