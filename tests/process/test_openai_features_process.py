"""n > 1, top and prompt logprobs, structured output and tool calls through the real process
tree (tiny random Llama), with the unchanged `openai` client, streamed and not."""

from __future__ import annotations

import json
import math

import llguidance
import openai
import pytest
from tokenizers import Tokenizer

from fastserve.runtime.frontend.guided import json_schema_grammar
from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess

pytestmark = pytest.mark.timeout(300)
MODEL = "tiny"
HELLO = [{"role": "user", "content": "hello there"}]
# Bounded values only: a random model under a mask must still finish in a few tokens.
FLAGS = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "pick": {"enum": ["in", "the"]},
    },
    "required": ["ok", "n", "pick"],
    "additionalProperties": False,
}
UNIT = {"type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"],
        "additionalProperties": False}  # fmt: skip
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "the weather",
                                      "parameters": UNIT}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"h": {"type": "integer", "minimum": 0, "maximum": 23}},
        "required": ["h"], "additionalProperties": False}}},
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny") / "model", seed=2)


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    args = ["--model", str(tiny_dir), "--served-model-name", MODEL, "--block-size", "16",
            "--num-device-blocks", "512", "--max-model-len", "1024", "--no-auto-profile"]  # fmt: skip
    with ServerProcess(args, tmp_path_factory.mktemp("logs")) as srv:
        yield srv


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _chat(client, **kw):
    return client.chat.completions.create(model=MODEL, messages=HELLO, **kw)


def test_n_choices_sample_on_their_own_with_seed_plus_i(client):
    resp = _chat(client, n=3, seed=5, temperature=1.0, max_tokens=8)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    texts = [c.message.content for c in resp.choices]
    assert len(set(texts)) > 1  # each choice samples on its own
    for i, text in enumerate(texts):  # choice i is what a lone request with seed 5 + i gets
        alone = _chat(client, seed=5 + i, temperature=1.0, max_tokens=8)
        assert alone.choices[0].message.content == text
    one = _chat(client, seed=5, temperature=1.0, max_tokens=8)
    assert resp.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once
    assert resp.usage.completion_tokens == sum(
        _chat(client, seed=5 + i, temperature=1.0, max_tokens=8).usage.completion_tokens
        for i in range(3)
    )
    stream = _chat(client, n=3, seed=5, temperature=1.0, max_tokens=8, stream=True,
                   stream_options={"include_usage": True})  # fmt: skip
    got, finishes, usage = {0: "", 1: "", 2: ""}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            got[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert [got[i] for i in range(3)] == texts and set(finishes) == {0, 1, 2}
    assert usage is not None and usage.completion_tokens == resp.usage.completion_tokens


def test_best_of_returns_the_likeliest_candidate(client):
    kw = {"model": MODEL, "prompt": "Once upon", "max_tokens": 6, "temperature": 1.0}
    best = client.completions.create(best_of=3, seed=11, logprobs=0, **kw)
    assert len(best.choices) == 1
    candidates = [client.completions.create(seed=11 + i, logprobs=0, **kw) for i in range(3)]
    scores = [sum(c.choices[0].logprobs.token_logprobs) for c in candidates]
    assert best.choices[0].text == candidates[scores.index(max(scores))].choices[0].text
    assert best.usage.completion_tokens == sum(c.usage.completion_tokens for c in candidates)


def test_chat_top_logprobs_stream_and_not(client):
    resp = _chat(client, logprobs=True, top_logprobs=3, temperature=0, max_tokens=6)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        values = [a.logprob for a in entry.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        # Greedy: the chosen token is the likeliest alternative, with the same logprob.
        assert entry.top_logprobs[0].token == entry.token
        assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-5)
    stream = _chat(client, logprobs=True, top_logprobs=3, temperature=0, max_tokens=6,
                   stream=True)  # fmt: skip
    streamed = [e for ch in stream for c in ch.choices if c.logprobs for e in c.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]


def _ids_by_text(tiny_dir) -> dict[str, int]:
    """Token text -> id, for the texts only one token has."""
    tok = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    seen: dict[str, list[int]] = {}
    for i in range(tok.get_vocab_size()):
        seen.setdefault(tok.decode([i], skip_special_tokens=False), []).append(i)
    return {text: ids[0] for text, ids in seen.items() if len(ids) == 1}


def test_echo_prompt_logprobs_as_evaluation_harnesses_ask(client, tiny_dir):
    prompt = "The quick brown fox"
    # lm-eval's loglikelihood request: echo, max_tokens 0, logprobs.
    resp = client.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2,
                                     max_tokens=0, temperature=0)  # fmt: skip
    choice = resp.choices[0]
    lp = choice.logprobs
    assert choice.text == prompt and resp.usage.completion_tokens == 0
    assert len(lp.tokens) == resp.usage.prompt_tokens and "".join(lp.tokens) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert all(2 <= len(top) <= 3 for top in lp.top_logprobs[1:])
    assert lp.text_offset[0] == 0
    # The alternatives of a generated position, and the prompt logprobs of the same prompt
    # extended by each of them: two code paths (sampler, prefill rows), one distribution.
    ids = Tokenizer.from_file(str(tiny_dir / "tokenizer.json")).encode(prompt).ids
    gen = client.completions.create(model=MODEL, prompt=ids, max_tokens=1, temperature=0,
                                    logprobs=5, echo=True)  # fmt: skip
    glp = gen.choices[0].logprobs
    assert glp.token_logprobs[: len(lp.tokens)] == pytest.approx(
        [None, *lp.token_logprobs[1:]], abs=1e-5
    )
    by_text = _ids_by_text(tiny_dir)
    checked = 0
    for text, value in glp.top_logprobs[-1].items():
        if text in by_text:
            again = client.completions.create(model=MODEL, prompt=[*ids, by_text[text]],
                                              echo=True, logprobs=0, max_tokens=0)  # fmt: skip
            assert math.isclose(again.choices[0].logprobs.token_logprobs[-1], value, abs_tol=1e-4)
            checked += 1
    assert checked >= 2
    stream = client.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2,
                                       max_tokens=0, stream=True)  # fmt: skip
    chunks = [c.choices[0] for c in stream if c.choices]
    assert chunks[0].text == prompt
    assert chunks[0].logprobs.token_logprobs == pytest.approx(lp.token_logprobs, abs=1e-6)


def _valid_prefix(tiny_dir, grammar: str, text: str) -> llguidance.LLMatcher:
    tok = llguidance.LLTokenizer((tiny_dir / "tokenizer.json").read_text(), eos_token=[2])
    matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
    assert matcher.consume_tokens(tok.tokenize_str(text)), (text, matcher.get_error())
    return matcher


def test_structured_output_json_schema_and_object(client, tiny_dir):
    fmt = {"type": "json_schema", "json_schema": {"name": "flags", "schema": FLAGS}}
    for temperature in (0, 1.0):
        resp = _chat(client, response_format=fmt, temperature=temperature, seed=1, max_tokens=60)
        value = json.loads(resp.choices[0].message.content)
        assert resp.choices[0].finish_reason == "stop"
        assert set(value) == {"ok", "n", "pick"} and isinstance(value["ok"], bool)
        assert 0 <= value["n"] <= 99 and value["pick"] in ("in", "the")
    stream = _chat(client, response_format=fmt, temperature=1.0, seed=2, max_tokens=60,
                   stream=True)  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert set(json.loads(text)) == {"ok", "n", "pick"}
    # Any object: a random model may not close it within max_tokens, but every token it
    # wrote keeps the text a valid beginning of a JSON object.
    resp = _chat(client, response_format={"type": "json_object"}, temperature=1.0, seed=3,
                 max_tokens=24)  # fmt: skip
    out = resp.choices[0].message.content
    matcher = _valid_prefix(tiny_dir, json_schema_grammar({"type": "object"}), out)
    assert out.startswith("{")
    if resp.choices[0].finish_reason == "stop":
        assert matcher.is_accepting() and isinstance(json.loads(out), dict)
    # The same request with no response_format is free text (the mask is per request).
    assert not _chat(client, temperature=0, max_tokens=8).choices[0].message.content.startswith("{")


def test_invalid_schemas_and_tool_choices_are_400s(client):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}
    with pytest.raises(openai.BadRequestError, match="invalid JSON schema: Invalid type: nope"):
        _chat(client, response_format=bad)
    with pytest.raises(openai.BadRequestError, match="which is not in `tools`"):
        _chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}})


def test_forced_tool_calls_stream_and_not(client):
    resp = _chat(client, tools=TOOLS, tool_choice="required", temperature=1.0, seed=4,
                 max_tokens=80)  # fmt: skip
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    assert (call.function.name, set(args)) in (("get_weather", {"unit"}), ("get_time", {"h"}))
    named = _chat(client, tools=TOOLS, tool_choice={"type": "function",
                  "function": {"name": "get_weather"}}, temperature=1.0, seed=4, max_tokens=80)  # fmt: skip
    assert named.choices[0].finish_reason == "stop"  # OpenAI's reason for a named function
    (call,) = named.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["unit"] in ("c", "f")
    stream = _chat(client, tools=TOOLS, tool_choice="required", temperature=1.0, seed=4,
                   max_tokens=80, stream=True)  # fmt: skip
    calls, finish, content = [], None, ""
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            calls += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert [(d.index, d.function.name, d.function.arguments) for d in calls] == [
        (0, choice.message.tool_calls[0].function.name,
         choice.message.tool_calls[0].function.arguments)
    ]  # fmt: skip
    # tool_choice "none": plain text, no calls parsed.
    plain = _chat(client, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=8)
    assert plain.choices[0].message.tool_calls is None
