"""Reading `GET /realtime/v1/metrics` (Prometheus text) in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from supaworker_local.config import StackConfig


async def fetch(stack: StackConfig, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, content type, body); without `headers`, with the service key. Async: the
    endpoint may be served by this very event loop (`local_realtime`)."""
    sent = headers if headers is not None else {"apikey": stack.service_role_key}
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{stack.api_url}/realtime/v1/metrics", headers=sent) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def parse(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def read(stack: StackConfig) -> dict[str, float]:
    status, _, body = await fetch(stack)
    assert status == 200, body
    return parse(body)


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Until `predicate()` holds (rate counters tick every 5 s, as on hosted)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def wait_for_sample(
    stack: StackConfig, name: str, value: float, timeout: float = 15.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await read(stack)).get(name) != value:
        if loop.time() > deadline:
            raise AssertionError(f"{name} never reached {value}: {(await read(stack)).get(name)}")
        await asyncio.sleep(0.1)
