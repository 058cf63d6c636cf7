import struct

import msgpack
import pytest

from fastserve.protocol.codec import MESSAGE_TYPES, PROTOCOL_VERSION, Codec, ProtocolError
from fastserve.protocol.common import BlockCopy, CopyDirection, SamplingParams, TokenLogprobs
from fastserve.protocol.to_frontend import OutputBatch, RequestOutput
from fastserve.protocol.to_scheduler import SampledToken, StepResult, SubmitRequest, SwapDone
from fastserve.protocol.to_worker import NewJob, ScheduledJob, TickPlan


def test_round_trip_nested_messages():
    codec = Codec()
    plan = TickPlan(
        tick=7,
        new_jobs=[NewJob("r1", [1, 2, 3], SamplingParams(max_tokens=5, seed=42, stop_token_ids=[9]))],
        scheduled=[ScheduledJob("r1", 3, [], [4, 5], True)],
        swap_out=[BlockCopy("r0", [1, 2], [10, 11])],
        released=["r9"],
    )
    frame = codec.encode(plan)
    assert codec.decode(frame).message == plan
    # The header numbers each sender's messages (bytes 2-9), though no receiver reads it.
    assert struct.unpack_from("!BBQ", frame)[2] == 1
    assert struct.unpack_from("!BBQ", codec.encode(plan))[2] == 2


def test_optional_fields_round_trip():
    codec = Codec()
    out = OutputBatch(3, [RequestOutput("a", [5], [-0.5], finish_reason=None, error=None),
                          RequestOutput("b", [], finish_reason="error", error="boom")])
    assert codec.decode(codec.encode(out)).message == out


def test_logprobs_and_grammars_round_trip():
    codec = Codec()
    prompt = TokenLogprobs([-1.5, float("-inf")], [[4, 5], [6, 7]], [[-0.1, -0.2], [-0.3, -0.4]])
    params = SamplingParams(logprobs=True, top_logprobs=2, prompt_logprobs=2, grammar='{"g": 1}')
    sub = SubmitRequest("r", [1, 2, 3], params, 0.0)
    result = StepResult(4, 0, [SampledToken("r", 9, -0.5, [9, 3], [-0.5, -1.0], prompt)])
    out = OutputBatch(4, [RequestOutput("r", [9], [-0.5], top_ids=[[9, 3]],
                                        top_logprobs=[[-0.5, -1.0]], prompt_logprobs=prompt)])
    for msg in (sub, result, out):
        assert codec.decode(codec.encode(msg)).message == msg


def test_rejects_unknown_type_and_version():
    codec = Codec()
    good = codec.encode(SubmitRequest("x", [1], SamplingParams(), 1.0))
    bad_type = bytes([200]) + good[1:]
    with pytest.raises(ProtocolError, match="unknown message type 200"):
        codec.decode(bad_type)
    bad_version = good[:1] + bytes([PROTOCOL_VERSION + 1]) + good[2:]
    with pytest.raises(ProtocolError, match="protocol version"):
        codec.decode(bad_version)
    with pytest.raises(ProtocolError, match="shorter than the header"):
        codec.decode(b"\x01")


def test_rejects_wrong_field_types():
    code = next(c for c, cls in MESSAGE_TYPES.items() if cls is SubmitRequest)
    header = struct.pack("!BBQ", code, PROTOCOL_VERSION, 1)
    params = [16, 1.0, 1.0, -1, None, 0, [], False, False, 0, None, None]
    ok = msgpack.packb(["id", [1, 2], params, 0.5, -3])
    decoded = Codec().decode(header + ok).message
    assert decoded.prompt_ids == [1, 2] and decoded.priority == -3
    wrong = msgpack.packb(["id", ["not", "ints"], params, 0.5, 0])
    with pytest.raises(ProtocolError, match="SubmitRequest.prompt_ids: expected int"):
        Codec().decode(header + wrong)
    short = msgpack.packb(["id", [1]])
    with pytest.raises(ProtocolError, match="needs 5 fields"):
        Codec().decode(header + short)
    with pytest.raises(ProtocolError, match="undecodable"):
        Codec().decode(header + b"\xc1")


def test_refuses_to_encode_non_messages():
    with pytest.raises(ProtocolError):
        Codec().encode({"not": "a message"})


def test_copy_direction_is_an_enum_on_the_wire():
    codec = Codec()
    done = codec.decode(codec.encode(SwapDone(3, 0, "r1", CopyDirection.UPLOAD, 0.5))).message
    assert done.direction is CopyDirection.UPLOAD
    # The bare string value encodes the same frame (a sender may still pass "out").
    as_text = SwapDone(3, 0, "r1", "out", 0.5)  # type: ignore[arg-type]
    assert codec.decode(codec.encode(as_text)).message.direction is CopyDirection.OFFLOAD
    with pytest.raises(ProtocolError, match="direction"):
        codec.decode(codec.encode(SwapDone(3, 0, "r1", "sideways", 0.5)))  # type: ignore[arg-type]
