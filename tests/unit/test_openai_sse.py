"""OpenAI response and stream-chunk shapes, and the SSE framing."""

from __future__ import annotations

import json

from fastserve.protocol.common import SamplingParams
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
    (opening,) = fmt.opening_chunks()
    assert opening["object"] == "chat.completion.chunk" and opening["id"] == "id-1"
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert opening["usage"] is None
    chunk = fmt.delta_chunk(Delta("Hi", [5]))
    assert chunk["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hi"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert fmt.delta_chunk(Delta("", [6])) is None  # held-back text: nothing to send
    last, usage = fmt.closing_chunks(Finished("length", Usage(3, 2)))
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "length"
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
    }


def test_completion_stream_chunks_with_echo_and_no_usage():
    fmt = formatter("completion", stream=True, echo_text="Say: ")
    (opening,) = fmt.opening_chunks()
    assert opening["object"] == "text_completion" and opening["choices"][0]["text"] == "Say: "
    assert "usage" not in opening
    assert fmt.delta_chunk(Delta("ok", [5]))["choices"][0]["text"] == "ok"
    (last,) = fmt.closing_chunks(Finished("stop", Usage(3, 1)))
    assert last["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}


def test_whole_responses():
    usage = Usage(3, 2)
    chat = formatter("chat").response("Hello", Delta("", [5, 6]), "stop", usage)
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
    comp = formatter("completion", echo_text="P:").response("x", Delta(""), "length", usage)
    assert comp["object"] == "text_completion" and comp["choices"][0]["text"] == "P:x"


def test_logprobs_shapes():
    chat = formatter("chat", logprobs=0).response(
        "ab", Delta("", [5, 6], [-0.5, -1.0]), "stop", Usage(3, 2)
    )
    content = chat["choices"][0]["logprobs"]["content"]
    assert content[0] == {
        "token": "<5>",
        "logprob": -0.5,
        "bytes": list(b"<5>"),
        "top_logprobs": [],
    }
    comp = formatter("completion", logprobs=1).response(
        "ab", Delta("", [5, 6], [-0.5, -1.0]), "stop", Usage(3, 2)
    )
    lp = comp["choices"][0]["logprobs"]
    assert lp == {
        "tokens": ["<5>", "<6>"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"<5>": -0.5}, {"<6>": -1.0}],
        "text_offset": [0, 3],
    }
