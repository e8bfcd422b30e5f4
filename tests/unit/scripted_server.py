"""A real HTTP server on loopback that answers each RPC as a test scripts it: a status and a
body, a dropped connection, or no answer at all. The async transport (aiohttp) meets real
sockets here; respx covers the sync one (httpx)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str | bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Answer:
        return cls(status, json.dumps(value))


DROP = "drop"  # close the connection after reading the request, without answering
HANG = "hang"  # read the request and never answer


@dataclass
class ScriptedServer:
    url: str
    script: dict[str, deque[Answer | str]] = field(default_factory=lambda: defaultdict(deque))
    requests: dict[str, list[web.BaseRequest]] = field(default_factory=lambda: defaultdict(list))
    bodies: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))

    def answer(self, function: str, *answers: Answer | str) -> None:
        """Queue answers for `function`; the last one repeats once the others are used."""
        self.script[function].extend(answers)

    def calls(self, function: str) -> int:
        return len(self.bodies[function])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        function = request.match_info["function"]
        self.requests[function].append(request)
        self.bodies[function].append(await request.read())
        queued = self.script[function]
        if not queued:
            return web.Response(status=500, text=f"nothing scripted for {function}")
        step = queued.popleft() if len(queued) > 1 else queued[0]
        if step == DROP:
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never reaches the client
        if step == HANG:
            await asyncio.sleep(3600)
        assert isinstance(step, Answer)
        body = step.body.encode() if isinstance(step.body, str) else step.body
        return web.Response(status=step.status, body=body, content_type=step.content_type)


@asynccontextmanager
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer("")
    app = web.Application()
    app.router.add_post("/rest/v1/rpc/{function}", server._handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = "http://{}:{}".format(*runner.addresses[0][:2])
    try:
        yield server
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """An address nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
