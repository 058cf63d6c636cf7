"""The live dashboard in a real browser: a real server (tiny model) under a stream of
requests, /dashboard rendered twice by headless Chromium; the numbers it shows must move
between the two renders, and a screenshot is kept in the test's tmp folder."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.model_fixtures import make_tiny_llama_dir
from tests.server_harness import ServerProcess, server_args, stream_completion

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's chromium)"
    ),
]
BODY = {"prompt": "hello world " * 3, "max_tokens": 40, "temperature": 0, "ignore_eos": True}
# Virtual time lets the page's 1 s polls run without waiting; Chromium pauses it while a
# fetch is pending, so each poll really reaches the server.
BUDGET_MS = 3500


class Load:
    """Streams completions from `concurrency` clients on a thread until stopped."""

    def __init__(self, url: str, concurrency: int = 6) -> None:
        self.url, self.concurrency = url, concurrency
        self.finished = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:

            async def client() -> None:
                while not self._stop.is_set():
                    await stream_completion(session, self.url, BODY)
                    self.finished += 1

            await asyncio.gather(*(client() for _ in range(self.concurrency)))


def chromium(profile: Path, *args: str) -> str:
    cmd = [
        str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
        "--no-first-run", f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}",
        *args,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def shown(dom: str) -> dict[str, str]:
    """Text of every element with an id (the page's numbers are leaves with ids)."""
    return dict(re.findall(r'id="([\w-]+)"[^>]*>([^<]*)<', dom))


def test_dashboard_renders_live_numbers(tmp_path):
    model = make_tiny_llama_dir(tmp_path / "model")
    # A small device pool and batch: jobs queue, are preempted and move to the host.
    args = server_args(model, "--no-auto-profile", "--max-batch-jobs", "4")
    args += ["--num-device-blocks", "48", "--num-host-blocks", "256"]
    with ServerProcess(args, tmp_path) as server, Load(server.url) as load:
        url = server.url + "/dashboard"
        deadline = time.monotonic() + 60
        while load.finished < 3:  # the scheduler has sent stats and latencies exist
            assert time.monotonic() < deadline, "no request finished under load"
            time.sleep(0.2)
        first = shown(chromium(tmp_path / "profile", "--dump-dom", url))
        time.sleep(2.0)
        second = shown(chromium(tmp_path / "profile", "--dump-dom", url))
        png = tmp_path / "dashboard.png"
        chromium(tmp_path / "profile", f"--screenshot={png}", "--window-size=1200,900", url)
    print(f"\ndashboard screenshot: {png}")
    print({k: (first.get(k), second.get(k)) for k in ("updates", "tick", "generated")})
    for dom in (first, second):
        assert dom["status"] == "ok" and int(dom["updates"]) >= 2, dom
        assert int(dom["in-flight"]) >= 1 and dom["tokens-per-s"] != "-"
        assert dom["ttft-p50"].endswith("s") and dom["jct-p99"].endswith("s")
        assert re.fullmatch(r"\d+ / \d+", dom["kv-device"]), dom["kv-device"]
    assert int(second["tick"]) > int(first["tick"])
    assert int(second["generated"]) > int(first["generated"])
    assert png.stat().st_size > 10_000
