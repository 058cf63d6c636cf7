"""The README's examples, run as written against the real frontend (HTTP, websocket and
ZeroMQ endpoints in process, a fake scheduler behind them): only the port numbers and key
folder change. The README's model name is the default model's served name."""

from __future__ import annotations

import ast
import asyncio
import functools
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from fastserve.actors.frontend import start_http_server
from fastserve.deploy.cli import build_parser, config_from_args
from fastserve.runtime.client import FastServeClient
from fastserve.runtime.curve_keys import CurveServerKeys
from fastserve.runtime.frontend.service import FrontendService
from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from fastserve.runtime.frontend.zmq_endpoint import ZmqClientEndpoint
from fastserve.runtime.model.registry import served_model_name
from tests.fake_scheduler import EchoScheduler, reply_for
from tests.readme import argv_variants, code_blocks, inline_spans, section, shell_commands
from tests.server_harness import free_port

pytestmark = pytest.mark.timeout(60)
README_MODEL = "SmolLM2-135M-Instruct"


@dataclass
class Server:
    http: str  # host:port of the HTTP server
    zmq: str  # the ZeroMQ endpoint's address
    fake: EchoScheduler


@pytest.fixture
async def server(tok: ModelTokenizer) -> AsyncIterator[Server]:
    fake = EchoScheduler(tok)
    fake.interval = 0.02  # a websocket abort sent at once lands while its stream runs
    service = FrontendService(fake.send, tokenizer=tok, served_model_name=README_MODEL)
    fake.service = service
    port = free_port()
    runner = await start_http_server(service, "127.0.0.1", port)
    endpoint = ZmqClientEndpoint(service, "tcp://127.0.0.1:*")
    await endpoint.start()
    yield Server(f"127.0.0.1:{port}", endpoint.bound_address, fake)
    await endpoint.stop()
    await runner.cleanup()


def on(server: Server, text: str) -> str:
    """An example with the README's addresses pointed at `server`."""
    text = re.sub(r"(localhost|127\.0\.0\.1):8000", server.http, text)
    return text.replace("tcp://127.0.0.1:5555", server.zmq)


def printer() -> tuple[io.StringIO, dict[str, Any]]:
    """Globals for an example whose `print` writes to the returned buffer (not to stdout,
    where other tests' log configuration may also write)."""
    printed = io.StringIO()
    return printed, {"print": functools.partial(print, file=printed)}


def test_readme_model_is_the_default_models_served_name(default_model_dir: Path) -> None:
    assert served_model_name(default_model_dir) == README_MODEL


async def test_curl_example(server: Server) -> None:
    (command,) = [c for c in code_blocks("bash", section("Use it")) if c.startswith("curl")]
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", on(server, command), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    body = json.loads(out)
    assert body["object"] == "chat.completion" and body["model"] == README_MODEL
    assert body["choices"][0]["message"]["content"] and body["choices"][0]["finish_reason"]


async def test_openai_client_example(server: Server) -> None:
    (example,) = [b for b in code_blocks("python") if "from openai import OpenAI" in b]
    printed, namespace = printer()
    code = compile(on(server, example), "README.md", "exec")
    # The openai client blocks: off the loop that serves it.
    await asyncio.wait_for(asyncio.to_thread(exec, code, namespace), 30)
    (submit,) = server.fake.submitted
    assert printed.getvalue() == reply_for(server.fake.tok.decode(submit.prompt_ids))


async def run_top_level_await(source: str, namespace: dict[str, Any]) -> None:
    """Run code written for an asyncio REPL (`python -m asyncio`): top-level `async with`."""
    code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)
    if result is not None:
        await result


async def test_zeromq_client_example(server: Server) -> None:
    (example,) = [b for b in code_blocks("python") if "FastServeClient" in b]
    printed, namespace = printer()
    await asyncio.wait_for(run_top_level_await(on(server, example), namespace), 30)
    chat, completion = server.fake.submitted
    assert printed.getvalue() == reply_for(server.fake.tok.decode(chat.prompt_ids))
    assert namespace["result"].text == reply_for("Once")
    assert completion.sampling.max_tokens == 20


async def test_websocket_example(server: Server) -> None:
    (transcript,) = [b for b in code_blocks("") if b.startswith("→")]
    frames = [(ln[0], json.loads(ln[2:].replace("[...]", "[]").replace("{...}", "{}")))
              for ln in transcript.splitlines()]  # fmt: skip
    messages = [{"role": "user", "content": "Hi!"}]
    got: list[dict[str, Any]] = []
    async with ClientSession() as session, session.ws_connect(f"http://{server.http}/v1/ws") as ws:
        for arrow, frame in frames:
            if arrow == "→":
                if frame.get("body", {}).get("messages") == []:
                    frame["body"]["messages"] = messages
                await ws.send_json(frame)
        while len([f for f in got if f["type"] in ("done", "error")]) < 2:
            got.append(await asyncio.wait_for(ws.receive_json(), 10))
    ends = {f["id"]: f for f in got if f["type"] in ("done", "error")}
    assert ends["a"]["finish_reason"] == "stop" and ends["b"]["finish_reason"] == "abort"
    for arrow, frame in frames:  # every frame the README shows has the fields it shows
        if arrow == "←":
            same = next(f for f in got if (f["id"], f["type"]) == (frame["id"], frame["type"]))
            assert set(frame) <= set(same), (frame, same)
            if "finish_reason" in frame:
                assert same["finish_reason"] == frame["finish_reason"]


async def test_curve_keys_example(server: Server, tmp_path: Path) -> None:
    """`fastserve keygen DIR`, serve with the two flags shown, connect as shown."""
    (keygen,) = shell_commands("fastserve keygen")
    (argv,) = argv_variants(keygen.replace("DIR", str(tmp_path)))
    args = build_parser().parse_args(argv[1:])
    assert args.func(args) == 0
    (flags,) = [s for s in inline_spans(section("Security and limits")) if "--zmq-curve" in s]
    argv = ["serve", "--zmq-port", str(free_port()), *flags.replace("DIR", str(tmp_path)).split()]
    cfg = config_from_args(build_parser().parse_args(argv))
    curve = CurveServerKeys.load(cfg.zmq_curve_secret_file, cfg.zmq_allowed_clients)
    endpoint = ZmqClientEndpoint(server.fake.service, "tcp://127.0.0.1:*", curve=curve)
    await endpoint.start()
    try:
        (call,) = [s for s in inline_spans() if s.startswith("FastServeClient(addr")]
        names = {"FastServeClient": FastServeClient, "addr": endpoint.bound_address}
        client = eval(call.replace("DIR", str(tmp_path)), names)
        async with client:
            result = await asyncio.wait_for(client.complete("completion", {"prompt": "x"}), 10)
        assert result.text == reply_for("x")
    finally:
        await endpoint.stop()
