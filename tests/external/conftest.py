"""Fixtures for the external-handler tests. `service`: a real HTTP processing service for the
`--handler-url` tests, an aiohttp app on 127.0.0.1 in a thread of the test process, whose
answers the job's payload chooses.

payload.mode:
  ok      200 {"doc": <document id>, "attempt": n}
  empty   204, no body
  text    200 with a body that is not JSON
  status  on the first try: payload.status with payload.body and payload.headers; then 200
  slow    on the first try: answer only after payload.seconds; then 200
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Request:
    at: float
    authorization: str | None
    body: dict[str, Any]

    @property
    def job(self) -> dict[str, Any]:
        job: dict[str, Any] = self.body["job"]
        return job


@dataclass
class Service:
    url: str = ""
    requests: list[Request] = field(default_factory=list)

    def for_job(self, job_id: object) -> list[Request]:
        return [r for r in self.requests if r.job["id"] == str(job_id)]

    async def process(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Request(time.monotonic(), request.headers.get("Authorization"), body))
        job = body["job"]
        payload, first = job["payload"], job["retry_count"] == 0
        mode = payload.get("mode", "ok")
        if mode == "empty":
            return web.Response(status=204)
        if mode == "text":
            return web.Response(text="done, no JSON here")
        if mode == "status" and first:
            return web.Response(
                status=int(payload["status"]),
                text=payload.get("body", ""),
                headers=payload.get("headers", {}),
            )
        if mode == "slow" and first:
            await asyncio.sleep(float(payload["seconds"]))
        return web.json_response({"doc": job["user_document_id"], "attempt": job["attempt"]})


@pytest.fixture()
def service() -> Iterator[Service]:
    svc = Service()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/internal/process", svc.process)
    runner = web.AppRunner(app)
    ready = threading.Event()

    async def serve() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        svc.url = f"http://127.0.0.1:{port}/internal/process"
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(10), "the test service did not start"
    yield svc
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
