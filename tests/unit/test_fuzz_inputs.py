"""Fuzzing the frontend's three doors (HTTP, codec, ZeroMQ endpoint): no input gets a 5xx,
the codec raises nothing but ProtocolError, and the endpoint answers and keeps serving.

Bounded (a few hundred cases, well under 20 s); benchmarks/fuzz_inputs.py runs the same
generators for 100k cases.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastserve.protocol.codec import Codec
from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from tests.fuzz_cases import (
    CONTENT_TYPES,
    DANGEROUS,
    FIELDS,
    NUMERIC_FIELDS,
    TEMPLATES,
    VALID_FRAMES,
    HttpCase,
    random_frame,
    random_http_case,
    random_multipart,
)
from tests.fuzz_harness import FuzzTarget, decode_outcome
from tests.model_fixtures import write_tiny_model

pytestmark = pytest.mark.timeout(120)
# No example database: CI runs from a clean clone, and the cases are seeded anyway.
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):
    """One frontend for every example: hypothesis calls the test many times."""
    tok = ModelTokenizer.from_dir(write_tiny_model(tmp_path_factory.mktemp("tiny")))
    loop = asyncio.new_event_loop()
    fuzz = FuzzTarget(tok)
    loop.run_until_complete(fuzz.start())
    yield loop, fuzz
    loop.run_until_complete(fuzz.stop())
    loop.close()


def check_http(target, case: HttpCase) -> None:
    loop, fuzz = target
    status = loop.run_until_complete(fuzz.post(case))
    assert status < 500, (status, case)
    assert fuzz.internal_errors == 0, case


@settings(FUZZ, max_examples=150)
@given(rnd=st.randoms(use_true_random=False))
def test_http_mutated_bodies_never_get_a_5xx(target, rnd):
    check_http(target, random_http_case(rnd))


@settings(FUZZ, max_examples=100)
@given(
    template=st.sampled_from(TEMPLATES),
    fields=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=3),
    content_type=st.sampled_from(CONTENT_TYPES),
)
def test_http_random_field_values_never_get_a_5xx(target, template, fields, content_type):
    path, body = template
    data = json.dumps({**body, **fields}).encode()
    check_http(target, HttpCase(path, data, content_type))


def test_http_sweep_of_dangerous_values(target):
    """Deterministic, beside the random cases: every numeric field, and the text fields,
    set to each value that broke (or could break) something behind the parser."""
    text_fields = ["prompt", "stop", "suffix", "model", "user"]
    for path, template in TEMPLATES:
        for name in [*NUMERIC_FIELDS, *text_fields, "stop_token_ids", "messages"]:
            for value in DANGEROUS:
                data = json.dumps({**template, name: value}).encode()
                check_http(target, HttpCase(path, data, "application/json"))
    chat = "/v1/chat/completions"
    for content in ("\ud800", "a\udfffb", ["\ud800"], [{"type": "text", "text": "\ud800"}]):
        data = json.dumps({"messages": [{"role": "user", "content": content}]}).encode()
        check_http(target, HttpCase(chat, data, "application/json"))


def test_http_fuzz_really_reaches_the_scheduler(target):
    """Not every case may be a 4xx: valid ones must get through (the fuzz could pass
    vacuously if every body were refused)."""
    loop, fuzz = target
    before = len(fuzz.fake.submitted)
    for path, body in TEMPLATES:
        status = loop.run_until_complete(fuzz.post(HttpCase(path, json.dumps(body).encode(), None)))
        assert status == 200
    assert len(fuzz.fake.submitted) == before + len(TEMPLATES)


@settings(FUZZ, max_examples=300)
@given(rnd=st.randoms(use_true_random=False))
def test_codec_decode_raises_only_protocol_error(rnd):
    decode_outcome(Codec(), random_frame(rnd))  # anything but ProtocolError propagates


@settings(FUZZ, max_examples=200)
@given(data=st.binary(max_size=64), frame=st.sampled_from(VALID_FRAMES))
def test_codec_decode_of_raw_and_truncated_bytes(data, frame):
    codec = Codec()
    decode_outcome(codec, data)
    decode_outcome(codec, frame[: len(data)] + data)


@settings(FUZZ, max_examples=40)
@given(rnds=st.lists(st.randoms(use_true_random=False), min_size=1, max_size=6))
def test_zmq_endpoint_answers_errors_and_keeps_serving(target, rnds):
    loop, fuzz = target
    seen = loop.run_until_complete(fuzz.send_frames([random_multipart(r) for r in rnds]))
    assert seen["5xx"] == 0 and seen["sentinel_failed"] == 0, seen
    assert fuzz.internal_errors == 0
