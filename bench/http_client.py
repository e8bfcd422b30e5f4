"""What one RPC costs the caller's CPU: the worker's HTTP stack against bare clients.

    .venv/bin/python bench/http_client.py [--requests 640]

The same cheap RPC (`claim_next_job` for an unknown worker: returns nothing) through the
gateway, at 1, 8 and 32 requests in flight, with:
  supaworker transport  AsyncQueueClient (AsyncRpcTransport: aiohttp), as the worker uses it
  httpx                 a bare httpx.AsyncClient POST (limits as the worker's: 64 connections)
  aiohttp               a bare aiohttp POST (10 connections)
CPU ms per request is this process's CPU time / requests. Prints only.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import aiohttp
import httpx

from bench._common import ensure_stack, table
from supaworker.client import AsyncQueueClient

BODY = {"p_worker_id": "bench-nobody", "p_limit": 1, "p_queues": ["bench-none"]}


async def measure(
    post: Callable[[], Awaitable[object]], inflight: int, n: int
) -> tuple[float, float]:
    async def one() -> None:
        for _ in range(n // inflight):
            await post()

    await one()  # warm the connections
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(inflight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return n / wall, cpu / n * 1000


async def main(n: int) -> None:
    config = ensure_stack()
    url = f"{config.api_url}/rest/v1/rpc/claim_next_job"
    key = config.service_role_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    rows = []
    queue = await AsyncQueueClient.connect(config.api_url, key)
    async with (
        httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as hx,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10)) as ah,
    ):

        async def via_queue() -> object:
            return await queue.claim("bench-nobody", 1, ["bench-none"])

        async def via_httpx() -> object:
            response = await hx.post(url, json=BODY, headers=headers)
            return response.json()

        async def via_aiohttp() -> object:
            async with ah.post(url, json=BODY, headers=headers) as response:
                return await response.json()

        for label, post in (
            ("supaworker transport", via_queue),
            ("httpx", via_httpx),
            ("aiohttp", via_aiohttp),
        ):
            for inflight in (1, 8, 32):
                rate, cpu = await measure(post, inflight, n)
                rows.append([label, str(inflight), f"{rate:,.0f}", f"{cpu:.2f}"])
    await queue.aclose()
    print(table(["client", "in flight", "requests/s", "client CPU ms/request"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=640)
    asyncio.run(main(parser.parse_args().requests))
