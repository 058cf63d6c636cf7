"""HTTP edge cases that used to reach the generic 500, aiohttp's own errors in the OpenAI
shape, and /openapi.json agreeing with what the parser enforces."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fastserve.runtime.frontend.app import MAX_BODY_BYTES
from fastserve.runtime.frontend.service import FrontendService
from tests.fake_scheduler import EchoScheduler

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def env(tok):
    fake = EchoScheduler(tok)
    service = FrontendService(fake.send, tokenizer=tok, served_model_name="tiny")
    fake.service = service
    async with TestClient(TestServer(service.build_app())) as client:
        yield client, fake, service


async def error_of(resp) -> dict:
    body = await resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


async def test_huge_top_k_is_a_400_not_a_500(env):
    client, fake, service = env
    resp = await client.post("/v1/completions", json={"prompt": "hi", "top_k": 1e308})
    assert resp.status == 400 and (await error_of(resp))["param"] == "top_k"
    assert fake.submitted == [] and service.metrics.internal_errors == 0


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        (b"[1, 2]", "application/json", "must be a JSON object, got array"),
        (b'"text"', "application/json", "must be a JSON object, got string"),
        (b"null", "application/json", "must be a JSON object, got null"),
        (b"3", None, "must be a JSON object, got integer"),
        (b"", "application/json", "could not parse the JSON body"),
        (b'{"prompt": "\xc3\x28"}', "application/json", "not valid UTF-8"),
        (b'{"prompt": "caf\xe9"}', "application/json; charset=latin-1", "not valid UTF-8"),
        (b'{"prompt": "x", "temperature": NaN}', "application/json", "NaN is not valid"),
        (b'{"prompt": "\\ud800"}', "application/json", "unpaired UTF-16 surrogate"),
        (b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", JSON["Content-Type"], "deeply"),
        (b"prompt=hello&max_tokens=5", "application/x-www-form-urlencoded", "could not parse"),
        (b"--xyz\r\n\r\n--xyz--", "multipart/form-data; boundary=xyz", "could not parse"),
    ],
)
async def test_bodies_that_are_not_clean_json_objects_are_400s(env, data, content_type, expected):
    client, fake, service = env
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await client.post("/v1/completions", data=data, headers=headers)
    assert resp.status == 400
    assert expected in (await error_of(resp))["message"]
    assert fake.submitted == [] and service.metrics.internal_errors == 0


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/json; charset=nonsense", "foo/bar"]
)
async def test_json_is_accepted_whatever_the_content_type_says(env, content_type):
    client, fake, _ = env
    headers = {"Content-Type": content_type} if content_type else {}
    data = json.dumps({"prompt": "hi", "max_tokens": 2}).encode()
    resp = await client.post("/v1/completions", data=data, headers=headers)
    assert resp.status == 200 and len(fake.submitted) == 1


async def test_aiohttp_errors_leave_in_the_openai_shape(env):
    client, _, _ = env
    resp = await client.get("/v1/completions")
    assert resp.status == 405 and "POST" in resp.headers["Allow"]
    assert "Method Not Allowed" in (await error_of(resp))["message"]
    resp = await client.post("/v1/nothing-here", json={})
    assert resp.status == 404 and (await error_of(resp))["code"] == "not_found"
    resp = await client.post("/v1/completions", data=b" " * (MAX_BODY_BYTES + 1), headers=JSON)
    assert resp.status == 413 and "Too Large" in (await error_of(resp))["message"]


async def test_openapi_document_lists_the_real_endpoints(env):
    client, _, _ = env
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.0")
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    props = schemas["CompletionRequest"]["properties"]
    assert props["top_k"] == {
        "type": "integer",
        "minimum": -1,
        "maximum": 2**31 - 1,
        "nullable": True,
        "description": props["top_k"]["description"],
    }
    assert props["model"]["enum"] == ["tiny"] and props["max_tokens"]["maximum"] == 256
    assert schemas["ChatCompletionRequest"]["required"] == ["messages"]
    assert "security" not in doc  # no keys configured: nothing to present


CONTEXT_BOUND = {"max_tokens", "max_completion_tokens", "min_tokens"}  # tied to the prompt


def _outside(schema: dict) -> list[float]:
    """Values just outside the published bounds."""
    step = 1 if schema["type"] == "integer" else 0.5
    out = []
    if "maximum" in schema:
        out.append(schema["maximum"] + step)
    if "minimum" in schema:
        low = schema["minimum"]
        out.append(low if schema.get("exclusiveMinimum") else low - step)
    return out


def _inside(schema: dict) -> list[float]:
    inside = [schema["maximum"]] if "maximum" in schema else []
    if "minimum" in schema and not schema.get("exclusiveMinimum"):
        inside.append(schema["minimum"])
    return inside


@pytest.mark.parametrize(
    ("path", "schema_name", "base"),
    [
        ("/v1/completions", "CompletionRequest", {"prompt": "hi", "max_tokens": 2}),
        (
            "/v1/chat/completions",
            "ChatCompletionRequest",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        ),
    ],
)
async def test_published_bounds_are_the_enforced_ones(env, path, schema_name, base):
    """Each numeric field: a value just past its published bound is a 400 naming it, and
    the bound itself is not refused because of that field."""
    client, _, _ = env
    doc = await (await client.get("/openapi.json")).json()
    props = doc["components"]["schemas"][schema_name]["properties"]
    numeric = {k: v for k, v in props.items() if v.get("type") in ("integer", "number")}
    assert len(numeric) >= 10
    for name, schema in numeric.items():
        if name in CONTEXT_BOUND:
            continue
        for value in _outside(schema):
            resp = await client.post(path, json={**base, name: value})
            assert resp.status == 400, (name, value)
            assert (await error_of(resp))["param"] == name, (name, value)
        for value in _inside(schema):
            resp = await client.post(path, json={**base, name: value})
            if resp.status != 200:  # e.g. logprobs with echo: refused, but not for its bound
                assert (await error_of(resp))["param"] != name, (name, value)
    stop = props["stop"]["oneOf"][1]
    too_many = ["s"] * (stop["maxItems"] + 1)
    resp = await client.post(path, json={**base, "stop": too_many})
    assert resp.status == 400 and (await error_of(resp))["param"] == "stop"
    too_long = "s" * (stop["items"]["maxLength"] + 1)
    resp = await client.post(path, json={**base, "stop": too_long})
    assert resp.status == 400 and (await error_of(resp))["param"] == "stop"
