"""Client cost per enqueue, and bulk enqueue, through PostgREST (issue 18).

    .venv/bin/python bench/enqueue_cost.py [--calls 10000] [--bulk 10000]

Side by side in one run, against the bench stack (bench/_common.py):
  client CPU   process CPU time per `AsyncQueueClient.enqueue` call, sequential, against a
               bare `aiohttp` and a bare `httpx.AsyncClient` POST of the same JSON to
               /rest/v1/rpc/enqueue_job with the same headers (the floor a client pays with
               each library: HTTP and JSON, no models, no error mapping)
  calls/s      wall-clock rate of the same sequential calls
  bulk         documents per second for `--bulk` documents in one `enqueue_many` call
               (`enqueue_jobs`), against `--calls` single `enqueue` calls and against
               procrastinate's `batch_defer_async` of as many jobs in one call (its producers
               write to PostgreSQL directly; supaworker's go through PostgREST)
Every call enqueues a new document (idempotent re-enqueues would measure less work).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import _bootstrap  # noqa: F401  (first: puts the repository on sys.path)
import aiohttp
import httpx

from bench._common import admin, bench_user, ensure_stack, fmt, machine, table
from supaworker.client import AsyncQueueClient, QueueClient
from supaworker_local.config import StackConfig


def documents(config: StackConfig, n: int) -> list[uuid.UUID]:
    with admin(config) as conn:
        user = bench_user(conn)
        rows = conn.execute(
            "insert into public.user_documents (user_id, name)"
            " select %s, 'enqueue-bench' from generate_series(1, %s) returning id",
            (user, n),
        ).fetchall()
    return [uuid.UUID(str(r[0])) for r in rows]


async def client_calls(
    config: StackConfig, docs: list[uuid.UUID], queue: str
) -> tuple[float, float]:
    """(CPU ms per call, calls/s) of AsyncQueueClient.enqueue."""
    client = await AsyncQueueClient.connect(config.api_url, config.service_role_key)
    try:
        await client.enqueue(docs[0], queue=queue)  # warm up the connection and imports
        cpu, wall = time.process_time(), time.perf_counter()
        for doc in docs[1:]:
            await client.enqueue(doc, queue=queue)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()
    n = len(docs) - 1
    return cpu / n * 1000, n / wall


def _headers(config: StackConfig) -> dict[str, str]:
    return {
        "apikey": config.service_role_key,
        "Authorization": f"Bearer {config.service_role_key}",
        "Content-Type": "application/json",
    }


def _body(doc: uuid.UUID, queue: str) -> dict[str, Any]:
    return {
        "p_user_document_id": str(doc),
        "p_priority": 0,
        "p_payload": {},
        "p_queue": queue,
        "p_requires": {},
    }


def sync_client_calls(
    config: StackConfig, docs: list[uuid.UUID], queue: str
) -> tuple[float, float]:
    """(CPU ms per call, calls/s) of the sync QueueClient.enqueue (supabase-py, httpx)."""
    with QueueClient.connect(config.api_url, config.service_role_key) as client:
        client.enqueue(docs[0], queue=queue)
        cpu, wall = time.process_time(), time.perf_counter()
        for doc in docs[1:]:
            client.enqueue(doc, queue=queue)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(docs) - 1
    return cpu / n * 1000, n / wall


async def bare_aiohttp_calls(
    config: StackConfig, docs: list[uuid.UUID], queue: str
) -> tuple[float, float]:
    """The same calls as a bare aiohttp POST (no models, no error mapping)."""
    url = f"{config.api_url}/rest/v1/rpc/enqueue_job"
    async with aiohttp.ClientSession(headers=_headers(config)) as http:
        async with http.post(url, json=_body(docs[0], queue)) as response:
            response.raise_for_status()
        cpu, wall = time.process_time(), time.perf_counter()
        for doc in docs[1:]:
            async with http.post(url, json=_body(doc, queue)) as response:
                response.raise_for_status()
                await response.json()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(docs) - 1
    return cpu / n * 1000, n / wall


async def bare_calls(config: StackConfig, docs: list[uuid.UUID], queue: str) -> tuple[float, float]:
    """The same calls as a bare httpx POST (no models, no error mapping)."""
    url = f"{config.api_url}/rest/v1/rpc/enqueue_job"

    def body(doc: uuid.UUID) -> dict[str, Any]:
        return _body(doc, queue)

    async with httpx.AsyncClient(headers=_headers(config), timeout=30) as http:
        (await http.post(url, json=body(docs[0]))).raise_for_status()
        cpu, wall = time.process_time(), time.perf_counter()
        for doc in docs[1:]:
            response = await http.post(url, json=body(doc))
            response.raise_for_status()
            response.json()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(docs) - 1
    return cpu / n * 1000, n / wall


async def bulk_call(config: StackConfig, docs: list[uuid.UUID], queue: str) -> tuple[float, float]:
    """(documents/s, CPU ms per document) of one enqueue_many call."""
    client = await AsyncQueueClient.connect(config.api_url, config.service_role_key)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        jobs = await client.enqueue_many(docs, queue=queue)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.aclose()
    assert len(jobs) == len(docs)
    return len(docs) / wall, cpu / len(docs) * 1000


def procrastinate_bulk(config: StackConfig, n: int) -> tuple[float, float]:
    """(jobs/s, CPU ms per job) of procrastinate's `batch_defer_async` with `n` jobs in one
    call, straight into PostgreSQL (psycopg, no HTTP): what a queue whose producers hold
    database credentials pays."""
    from bench.peers import procrastinate_app
    from bench.throughput import prepare_procrastinate, procrastinate_dsn

    prepare_procrastinate(config)
    app = procrastinate_app(procrastinate_dsn(config))

    async def defer() -> tuple[float, float]:
        async with app.open_async():
            task = app.tasks["noop"].configure(queue=f"enq-{uuid.uuid4().hex[:6]}")
            await task.batch_defer_async({})  # warm the pool
            cpu, wall = time.process_time(), time.perf_counter()
            await task.batch_defer_async(*({} for _ in range(n)))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return n / wall, cpu / n * 1000

    return asyncio.run(defer())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10000, help="single calls per path")
    parser.add_argument("--bulk", type=int, default=10000, help="documents in one bulk call")
    args = parser.parse_args()
    config = ensure_stack()
    queue = f"enq-{uuid.uuid4().hex[:6]}"

    def docs(n: int) -> list[uuid.UUID]:
        return documents(config, n)

    client_cpu, client_rate = asyncio.run(client_calls(config, docs(args.calls + 1), queue))
    sync_cpu, sync_rate = sync_client_calls(config, docs(args.calls + 1), queue)
    aio_cpu, aio_rate = asyncio.run(bare_aiohttp_calls(config, docs(args.calls + 1), queue))
    bare_cpu, bare_rate = asyncio.run(bare_calls(config, docs(args.calls + 1), queue))
    bulk_rate, bulk_cpu = asyncio.run(bulk_call(config, docs(args.bulk), queue))
    pc_rate, pc_cpu = procrastinate_bulk(config, args.bulk)
    print(machine())
    print(
        table(
            ["enqueue path", "client CPU ms/doc", "docs/s"],
            [
                ["AsyncQueueClient.enqueue (1 call/doc)", fmt(client_cpu, 2), fmt(client_rate)],
                ["QueueClient.enqueue, sync (1 call/doc)", fmt(sync_cpu, 2), fmt(sync_rate)],
                ["bare aiohttp POST (1 call/doc)", fmt(aio_cpu, 2), fmt(aio_rate)],
                ["bare httpx POST (1 call/doc)", fmt(bare_cpu, 2), fmt(bare_rate)],
                [f"enqueue_many ({args.bulk} in 1 call)", fmt(bulk_cpu, 3), fmt(bulk_rate)],
                [
                    f"procrastinate batch_defer_async ({args.bulk} in 1 call, direct SQL)",
                    fmt(pc_cpu, 3),
                    fmt(pc_rate),
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
