"""`fastserve serve --api-key ... --zmq-curve-secret ...` on the real process tree: the
keys reach the frontend process, HTTP needs the bearer key, ZeroMQ the admitted key pair."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from fastserve.runtime.client import FastServeClient
from fastserve.runtime.curve_keys import generate_keypair
from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, free_port

pytestmark = pytest.mark.timeout(240)
BODY = {"prompt": "hello world", "max_tokens": 4, "temperature": 0, "ignore_eos": True}


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps(BODY).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_api_key_and_curve_keys_in_the_real_server(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "model")
    _, server_secret = generate_keypair(tmp_path / "keys", "server")
    client_public, client_secret = generate_keypair(tmp_path / "keys", "client")
    zmq_port = free_port()
    args = ["--model", str(model), "--block-size", "4", "--num-device-blocks", "256"]
    args += ["--max-model-len", "256", "--api-key", "sk-test", "--zmq-port", str(zmq_port)]
    args += ["--zmq-curve-secret", str(server_secret), "--zmq-allowed-clients", str(client_public)]
    address = f"tcp://127.0.0.1:{zmq_port}"
    with ServerProcess(args, tmp_path) as server:
        assert post(server.url, {}) == 401
        assert post(server.url, {"Authorization": "Bearer sk-wrong"}) == 401
        assert post(server.url, {"Authorization": "Bearer sk-test"}) == 200

        async def scenario():
            async with FastServeClient(
                address,
                server_public_key=tmp_path / "keys" / "server.key",
                client_keys=client_secret,
            ) as client:
                admitted = await asyncio.wait_for(client.complete("completion", BODY), 60)
            async with FastServeClient(address) as plain:
                try:
                    await asyncio.wait_for(plain.complete("completion", BODY), 2)
                    refused = False
                except TimeoutError:
                    refused = True
            return admitted, refused

        admitted, plain_refused = asyncio.run(scenario())
        assert server.stop() == 0
    assert admitted.finish_reason == "length" and len(admitted.token_ids) == 4
    assert plain_refused  # a peer without CURVE got nothing back
    assert "sk-test" not in server.logs()  # the key is never logged
