"""Tool-call parsing (streamed in any cut), the format registry, the prompt that shows the
tools, and the grammar that forces a call."""

from __future__ import annotations

import json

import llguidance
import pytest

from fastserve.runtime.frontend.chat_template import ChatTemplate
from fastserve.runtime.frontend.tool_parsers import (
    TOOL_FORMATS,
    HermesParser,
    Llama3JsonParser,
    tool_format_for,
)
from fastserve.runtime.frontend.tool_request import ToolSetup, prompt_messages

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"unit": {"enum": ["c", "f"]}}, "required": ["unit"]}}}  # fmt: skip
HERMES_OUTPUT = (
    'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"unit": "c"}}\n'
    '</tool_call>\n<tool_call>{"name": "get_time", "arguments": "{\\"h\\": 3}"}</tool_call>\n'
)


def _run(parser, text: str, cut: int) -> tuple[str, list]:
    content, calls = "", []
    for i in range(0, len(text), cut):
        piece, new = parser.feed(text[i : i + cut])
        content, calls = content + piece, calls + new
    piece, new = parser.flush()
    return content + piece, calls + new


@pytest.mark.parametrize("cut", [1, 2, 5, 13, 1000])
def test_hermes_calls_are_found_however_the_text_is_streamed(cut):
    content, calls = _run(HermesParser(), HERMES_OUTPUT, cut)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"unit": "c"}),
        ("get_time", {"h": 3}),
    ]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_hermes_keeps_what_is_not_a_call_as_content():
    content, calls = _run(HermesParser(), "a <tool_call>not json</tool_call> b <tool_ca", 3)
    assert calls == [] and content == "a <tool_call>not json</tool_call> b <tool_ca"
    # An unclosed call whose JSON is complete (the model stopped at EOS) still counts.
    content, calls = _run(HermesParser(), '<tool_call>\n{"name": "f", "arguments": {}}', 4)
    assert content == "" and [c.name for c in calls] == ["f"]
    content, calls = _run(HermesParser(), "plain text, no call", 4)
    assert (content, calls) == ("plain text, no call", [])


def test_llama3_json_calls():
    text = '{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}'
    content, calls = _run(Llama3JsonParser(), text, 3)
    assert content == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("f", {"a": 1}),
        ("g", {}),
    ]
    assert _run(Llama3JsonParser(), "Hello {x}", 2) == ("Hello {x}", [])


def test_format_registry_by_template_then_family():
    assert tool_format_for("... <tool_call> ...", "llama").name == "hermes"
    assert tool_format_for("{{ '<|python_tag|>' }}", "llama").name == "llama3_json"
    assert tool_format_for("{{ messages }}", "qwen2").name == "hermes"
    assert tool_format_for(None, "llama").name == "hermes"  # SmolLM2: no format of its own


class _Tok:
    """What prompt_messages reads of a ModelTokenizer."""

    def __init__(self, source: str) -> None:
        self.chat_template = ChatTemplate(source)
        self.template_shows_tools = self.chat_template.shows_tools


def test_prompt_without_tool_template_uses_the_hermes_layout():
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"unit": "c"}'}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "warm"},
    ]  # fmt: skip
    setup = ToolSetup([WEATHER], TOOL_FORMATS["hermes"])
    messages, tools = prompt_messages(history, setup, _Tok("{{ messages }}"))
    assert tools is None
    assert messages[0]["content"].startswith("Be brief.\n\n# Tools")
    assert json.dumps(WEATHER) in messages[0]["content"]
    assert messages[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"unit": "c"}}\n</tool_call>'
    )
    assert messages[3] == {
        "role": "user",
        "content": "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nwarm\n</tool_response>",
    }
    assert len(messages) == 4


def test_prompt_with_a_tool_template_gets_the_tools_and_argument_objects():
    source = "{% for t in tools %}{{ t.function.name }}{% endfor %}{{ messages }}"
    history = [{"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"unit": "f"}'}}]}]  # fmt: skip
    messages, tools = prompt_messages(history, ToolSetup([WEATHER], TOOL_FORMATS["hermes"]),
                                      _Tok(source))  # fmt: skip
    assert tools == [WEATHER]
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == {"unit": "f"}
    assert ChatTemplate(source).render(messages, tools=tools).startswith("get_weather")


def test_forced_grammar_admits_exactly_a_call_to_the_tools(tmp_path):
    from tests.model_fixtures import make_tiny_llama_dir

    path = make_tiny_llama_dir(tmp_path / "m")
    tok = llguidance.LLTokenizer((path / "tokenizer.json").read_text(), eos_token=[2])
    grammar = TOOL_FORMATS["hermes"].forced_grammar([WEATHER])

    def accepts(text: str) -> bool:
        m = llguidance.LLMatcher(tok, grammar, log_level=0)
        return m.consume_tokens(tok.tokenize_str(text)) and m.is_accepting()

    assert accepts('<tool_call>\n{"name": "get_weather", "arguments": {"unit": "c"}}\n</tool_call>')
    assert not accepts('<tool_call>\n{"name": "other", "arguments": {"unit": "c"}}\n</tool_call>')
    assert not accepts(
        '<tool_call>\n{"name": "get_weather", "arguments": {"unit": "k"}}\n</tool_call>'
    )
    assert not accepts("Sure!")


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"role": "assistant", "content": "hi", "tool_calls": True}, "tool_calls` must be an array"),
        ({"role": "assistant", "content": "hi", "tool_calls": [1]}, "tool_calls` must be an array"),
        ({"role": "tool", "content": "1", "tool_call_id": 5}, "tool_call_id` must be a string"),
        ({"role": "user", "content": "hi", "name": ["x"]}, "name` must be a string"),
    ],
)
def test_malformed_message_tool_fields_are_400s(message, needle):
    from fastserve.runtime.frontend.chat_messages import normalize_messages
    from fastserve.runtime.frontend.errors import RequestError

    with pytest.raises(RequestError, match=needle):
        normalize_messages([message])
