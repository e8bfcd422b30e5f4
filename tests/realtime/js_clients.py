"""supabase-js 2 (realtime-js, unchanged) under Node, as a pytest fixture: `run_js(key,
clients)` starts tests/realtime/js/realtime_client.mjs with one supabase-js client per entry
(see that script for the spec and what it prints). A plugin (tests/conftest.py), so that the
Realtime and the security tests share it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from supaworker_local.config import StackConfig

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("js") / "realtime_client.mjs"


class JsClients:
    """The Node script as a subprocess: JSON lines out, stdin closed to stop it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def read_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    stderr = await self._stderr()
                    raise AssertionError(f"node exited early: {self.lines} {stderr}")
                line: dict[str, Any] = json.loads(raw)
                self.lines.append(line)
                assert not line.get("timeout"), self.lines
                if predicate(line):
                    return line

    async def collect(self, seconds: float) -> list[dict[str, Any]]:
        """The change lines printed within `seconds`."""
        lines: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                lines.append(await self.read_until(lambda _: True, left))
            except TimeoutError:
                break
        return [line for line in lines if "eventType" in line]

    async def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def _stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@pytest.fixture()
async def run_js(stack: StackConfig) -> AsyncIterator[Callable[..., Any]]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required for the supabase-js tests")
    started: list[JsClients] = []

    async def run(key: str, clients: list[dict[str, Any]]) -> JsClients:
        config = {
            "url": stack.api_url,
            "key": key,
            "clients": clients,
            "timeoutMs": 60_000,
        }
        process = await asyncio.create_subprocess_exec(
            node,
            "--experimental-websocket",
            "--no-warnings",
            str(SCRIPT),
            cwd=ROOT,
            env={**os.environ, "RT_CONFIG": json.dumps(config)},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        js = JsClients(process)
        started.append(js)
        return js

    yield run
    for js in started:
        await js.stop()
