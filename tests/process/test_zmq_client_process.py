"""FastServeClient against the real process tree (`fastserve serve --zmq-port`), tiny model."""

import asyncio
import json
import urllib.request

import pytest

from fastserve.runtime.client import FastServeClient
from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, free_port

pytestmark = pytest.mark.timeout(240)


def test_zmq_client_gets_exactly_max_tokens(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "model")
    zmq_port = free_port()
    args = ["--model", str(model), "--block-size", "4", "--num-device-blocks", "256"]
    args += ["--max-model-len", "256", "--zmq-port", str(zmq_port)]
    body = {"prompt": "hello world", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
    with ServerProcess(args, tmp_path) as server:

        async def scenario():
            async with FastServeClient(f"tcp://127.0.0.1:{zmq_port}") as client:
                streamed = client.stream("completion", body)
                deltas = [d async for d in streamed]
                whole = await client.complete("completion", body)
            return deltas, streamed.done, whole

        deltas, done, whole = asyncio.run(asyncio.wait_for(scenario(), 60))
        request = urllib.request.Request(
            server.url + "/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            http = json.load(resp)
    assert len(whole.token_ids) == 12 and whole.finish_reason == "length"
    assert whole.usage.completion_tokens == 12
    assert done is not None and done.finish_reason == "length" and done.completion_tokens == 12
    # Greedy: streamed, whole and HTTP runs of the same prompt agree.
    assert sum((d.token_ids for d in deltas), []) == whole.token_ids
    assert "".join(d.text for d in deltas) == whole.text == http["choices"][0]["text"]
