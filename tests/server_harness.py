"""Start `fastserve serve` as a real OS process tree for tests, and tear it down; talk to
it over HTTP (streamed completions) and watch its processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

from fastserve.deploy.serve import free_tcp_port


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_tcp_port("127.0.0.1")


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> dict[int, str]:
    """Live descendant processes of `pid`: pid -> command line (process title)."""
    children: dict[int, list[int]] = {}
    titles: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        if state == "Z":
            continue
        children.setdefault(ppid, []).append(int(entry.name))
        titles[int(entry.name)] = cmd
    out: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out[child] = titles[child]
            stack.append(child)
    return out


class ServerProcess:
    """`fastserve serve ARGS` on a free port; logs go to a file in `log_dir`."""

    def __init__(self, args: list[str], log_dir: Path, ready_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        cmd = [
            sys.executable,
            "-m",
            "fastserve.deploy.cli",
            "serve",
            "--port",
            str(self.port),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ready_timeout = ready_timeout

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.logs()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready in {self.ready_timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def log_events(self) -> list[dict]:
        events = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        tree = descendants(self.proc.pid)
        self.stop()
        for pid in tree:  # never leave orphans behind a failed test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def server_args(model_dir, *extra):
    """`serve` flags for a tiny model: small blocks and context, a fixed device pool."""
    return [
        "--model",
        str(model_dir),
        "--block-size",
        "4",
        "--num-device-blocks",
        "256",
        "--max-model-len",
        "256",
        *extra,
    ]


async def stream_completion(session, url, body, on_first_chunk=None):
    """Returns (text, finish_reason, error) of a streamed completion."""
    text, finish, error = "", None, None
    async with session.post(url + "/v1/completions", json={**body, "stream": True}) as resp:
        if resp.status != 200:
            return "", None, (await resp.json())["error"]
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                error = chunk["error"]
                continue
            choice = chunk["choices"][0]
            if on_first_chunk is not None and not text:
                on_first_chunk()
            text += choice["text"]
            finish = choice["finish_reason"] or finish
    return text, finish, error


async def stream_usage(session, url, body) -> tuple[int, str | None, list]:
    """(tokens, finish reason, errors) of a streamed completion; a 500 before the stream
    started counts as an error."""
    tokens, finish, errors = 0, None, []
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with session.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            return 0, None, [(await resp.json())["error"]]
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                errors.append(chunk["error"])
                continue
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"]:
                finish = chunk["choices"][0]["finish_reason"] or finish
    return tokens, finish, errors


def kill_during_streams(url, body, n, victim):
    """Start `n` streaming completions, SIGKILL process `victim` once the first token
    arrives, and return each stream's (text, finish_reason, error)."""

    async def scenario():
        started = asyncio.Event()

        async def one(s):
            try:
                return await stream_completion(s, url, body, started.set)
            except aiohttp.ClientError as exc:
                return ("", None, {"message": f"connection closed: {exc}"})

        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.ensure_future(one(s)) for _ in range(n)]
            await asyncio.wait_for(started.wait(), 60)
            os.kill(victim, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    return asyncio.run(scenario())
