"""OpenAI response and stream-chunk shapes, and the SSE framing."""

from __future__ import annotations

import json

from fastserve.protocol.common import SamplingParams, TokenLogprobs
from fastserve.runtime.frontend.events import Delta, Finished, Usage
from fastserve.runtime.frontend.openai_schema import ParsedRequest
from fastserve.runtime.frontend.responses import SSE_DONE, ResponseFormatter, sse_event


def formatter(kind: str, **fields) -> ResponseFormatter:
    parsed = ParsedRequest(kind, "tiny", [1, 2, 3], SamplingParams(), **fields)
    return ResponseFormatter(parsed, "id-1", 1700000000, lambda t: f"<{t}>")


def test_sse_event_framing():
    frame = sse_event({"text": "a\nb é"})
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2  # newlines inside the JSON are escaped
    assert json.loads(frame[6:]) == {"text": "a\nb é"}
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_chat_stream_chunks():
    fmt = formatter("chat", stream=True, include_usage=True)
    opening, chunk = fmt.delta_chunks(Delta("Hi", [5]))
    assert opening["object"] == "chat.completion.chunk" and opening["id"] == "id-1"
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert opening["usage"] is None
    assert chunk["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hi"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert fmt.delta_chunks(Delta("", [6])) == []  # held-back text: nothing to send
    (last,) = fmt.closing_chunks(Finished("length", Usage(3, 2)))
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "length"
    usage = fmt.usage_chunk(Usage(3, 2))
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
    }


def test_completion_stream_chunks_with_echo_and_no_usage():
    fmt = formatter("completion", stream=True, echo_text="Say: ")
    opening, chunk = fmt.delta_chunks(Delta("ok", [5]))
    assert opening["object"] == "text_completion" and opening["choices"][0]["text"] == "Say: "
    assert "usage" not in opening
    assert chunk["choices"][0]["text"] == "ok"
    (last,) = fmt.closing_chunks(Finished("stop", Usage(3, 1)))
    assert last["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}
    assert fmt.usage_chunk(Usage(3, 1)) is None


def test_whole_responses():
    usage = Usage(3, 2)
    chat = formatter("chat").response([(Delta("Hello", [5, 6]), "stop")], usage)
    assert chat["object"] == "chat.completion"
    assert chat["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert chat["usage"]["total_tokens"] == 5
    comp = formatter("completion", echo_text="P:").response([(Delta("x"), "length")], usage)
    assert comp["object"] == "text_completion" and comp["choices"][0]["text"] == "P:x"


def test_logprobs_shapes():
    chat = formatter("chat", logprobs=0).response(
        [(Delta("ab", [5, 6], [-0.5, -1.0]), "stop")], Usage(3, 2)
    )
    content = chat["choices"][0]["logprobs"]["content"]
    assert content[0] == {
        "token": "<5>",
        "logprob": -0.5,
        "bytes": list(b"<5>"),
        "top_logprobs": [],
    }
    comp = formatter("completion", logprobs=1).response(
        [(Delta("ab", [5, 6], [-0.5, -1.0]), "stop")], Usage(3, 2)
    )
    lp = comp["choices"][0]["logprobs"]
    assert lp == {
        "tokens": ["<5>", "<6>"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"<5>": -0.5}, {"<6>": -1.0}],
        "text_offset": [0, 3],
    }


def test_top_logprobs_and_echoed_prompt_logprobs():
    alts = [[5, 9], [9, 6]], [[-0.5, -1.5], [-0.25, -1.0]]
    chat = formatter("chat", logprobs=2).response(
        [(Delta("ab", [5, 6], [-0.5, -1.0], *alts), "stop")], Usage(3, 2)
    )
    second = chat["choices"][0]["logprobs"]["content"][1]
    assert [a["token"] for a in second["top_logprobs"]] == ["<9>", "<6>"]
    assert second["top_logprobs"][0] == {"token": "<9>", "logprob": -0.25, "bytes": list(b"<9>")}
    # The prompt [1, 2, 3] echoed: nothing predicts its first token; NaN (not computed) is null.
    prompt = TokenLogprobs([-2.0, float("nan")], [[2, 4], [4, 3]], [[-2.0, -3.0], [-0.1, -0.2]])
    comp = formatter("completion", logprobs=2, echo_text="<1><2><3>").response(
        [(Delta("ab", [5, 6], [-0.5, -1.0], *alts, prompt=prompt), "length")], Usage(3, 2)
    )
    lp = comp["choices"][0]["logprobs"]
    assert lp["tokens"] == ["<1>", "<2>", "<3>", "<5>", "<6>"]
    assert lp["token_logprobs"] == [None, -2.0, None, -0.5, -1.0]
    assert lp["top_logprobs"][0] is None
    assert lp["top_logprobs"][1] == {"<2>": -2.0, "<4>": -3.0}
    # The sampled token is added to its alternatives, as OpenAI does.
    assert lp["top_logprobs"][4] == {"<9>": -0.25, "<6>": -1.0}
    assert lp["text_offset"] == [0, 3, 6, 9, 12]


def test_stream_chunks_of_several_choices_carry_their_index():
    fmt = formatter("completion", stream=True, n=2, best_of=2)
    first = fmt.delta_chunks(Delta("a", [5], index=1))
    second = fmt.delta_chunks(Delta("b", [6], index=0))
    assert [c["choices"][0]["index"] for c in first + second] == [1, 0]
    ends = fmt.closing_chunks(Finished("stop", Usage(3, 1), index=1))
    assert ends[-1]["choices"][0] == {"index": 1, "text": "", "logprobs": None,
                                      "finish_reason": "stop"}
    whole = formatter("chat", n=2).response(
        [(Delta("x", [5]), "stop"), (Delta("y", [6]), "length")], Usage(3, 2)
    )
    assert [(c["index"], c["message"]["content"], c["finish_reason"])
            for c in whole["choices"]] == [(0, "x", "stop"), (1, "y", "length")]
