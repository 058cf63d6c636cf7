"""CurveZMQ on the client endpoint: the admitted key pair is served; any other peer (no
CURVE, an unknown client key, the wrong server key) gets nothing at all."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest
import zmq
import zmq.asyncio

from fastserve.deploy.cli import main as cli_main
from fastserve.protocol.client import ClientSubmit
from fastserve.protocol.codec import Codec
from fastserve.runtime.client import FastServeClient, FastServeError
from fastserve.runtime.curve_keys import (
    CurveKeyError,
    CurveServerKeys,
    load_allowed_keys,
    load_keypair,
)
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.zmq_endpoint import ZmqClientEndpoint
from tests.fake_scheduler import EchoScheduler

pytestmark = pytest.mark.timeout(60)
BODY = {"prompt": "hi", "max_tokens": 3}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    """server, client (admitted) and stranger (not admitted) key pairs, from the CLI."""
    root = tmp_path_factory.mktemp("keys")
    with pytest.raises(SystemExit) as done:
        cli_main(["keygen", str(root), "--name", "server", "--name", "client"])
    assert done.value.code == 0
    with pytest.raises(SystemExit):
        cli_main(["keygen", str(root / "other"), "--name", "stranger"])
    return root


@pytest.fixture
async def env(tok, keys):
    fake = EchoScheduler(tok)
    service = FrontendService(fake.send, tokenizer=tok, served_model_name="tiny")
    fake.service = service
    curve = CurveServerKeys.load(str(keys / "server.key_secret"), [str(keys / "client.key")])
    endpoint = ZmqClientEndpoint(service, "tcp://127.0.0.1:*", curve=curve)
    await endpoint.start()
    yield endpoint, fake
    await endpoint.stop()


def test_keygen_writes_a_private_secret_file(keys):
    assert (keys / "server.key").is_file() and (keys / "client.key").is_file()
    mode = stat.S_IMODE(os.stat(keys / "client.key_secret").st_mode)
    assert mode == 0o600
    public, secret = load_keypair(keys / "client.key_secret")
    assert len(public) == len(secret) == 40


async def test_admitted_client_is_served(env, keys):
    endpoint, fake = env
    async with FastServeClient(
        endpoint.bound_address,
        server_public_key=keys / "server.key",
        client_keys=keys / "client.key_secret",
    ) as client:
        result = await asyncio.wait_for(client.complete("completion", BODY), 10)
    assert result.finish_reason == "length" and len(fake.submitted) == 1


async def test_unknown_client_key_is_refused_with_401(env, keys):
    endpoint, fake = env
    async with FastServeClient(
        endpoint.bound_address,
        server_public_key=keys / "server.key",
        client_keys=keys / "other" / "stranger.key_secret",
    ) as client:
        with pytest.raises(FastServeError) as err:
            await asyncio.wait_for(client.complete("completion", BODY), 10)
        assert err.value.status == 401
        with pytest.raises(FastServeError):  # and fails fast from then on
            await asyncio.wait_for(client.complete("completion", BODY), 1)
    assert fake.submitted == []


async def test_peers_without_the_right_keys_get_nothing(env, keys):
    endpoint, fake = env
    wrong_server = FastServeClient(
        endpoint.bound_address,
        server_public_key=keys / "client.key",  # not the server's key
        client_keys=keys / "client.key_secret",
    )
    for client in (FastServeClient(endpoint.bound_address), wrong_server):
        async with client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.complete("completion", BODY), 1.0)
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint.bound_address)
    await sock.send(Codec().encode(ClientSubmit("raw", "completion", "{}")))
    assert await sock.poll(500) == 0  # not even an error frame
    sock.close()
    ctx.term()
    assert fake.submitted == []


def test_allowed_keys_from_dirs_files_and_z85(keys):
    client_public = load_keypair(keys / "client.key_secret")[0]
    assert load_allowed_keys([str(keys / "client.key")]) == {client_public}
    assert client_public in load_allowed_keys([str(keys)])  # every .key in the directory
    assert load_allowed_keys([f"z85:{client_public.decode()}"]) == {client_public}
    bad_specs = (
        [str(keys / "missing.key")],
        ["z85:" + "~" * 40],
        ["z85:" + "#" * 40],
        ["z85:abc"],
        [client_public.decode()],  # no prefix: a file name, and no such file
    )
    for bad in bad_specs:
        with pytest.raises(CurveKeyError):
            load_allowed_keys(bad)
    with pytest.raises(CurveKeyError):
        CurveServerKeys.load(str(keys / "server.key_secret"), [])
    with pytest.raises(CurveKeyError):
        load_keypair(keys / "server.key")  # public only
