"""The queues a user would pick instead, set up the same way as supaworker's bench runs.

    python -m bench.peers procrastinate --dsn DSN --queue Q --concurrency N   # burst worker
    python -m bench.peers arq --queue Q --concurrency N                       # burst worker

Both run a no-op async task until their queue is empty, then exit (procrastinate's
`wait=False`, arq's `burst=True`), like `supaworker run --burst`. Needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379


# -- procrastinate --------------------------------------------------------------------------
def procrastinate_app(dsn: str, *, pool_max: int | None = 10) -> Any:
    """pool_max None: procrastinate's (psycopg_pool's) default pool sizes."""
    import procrastinate

    sizes = {} if pool_max is None else {"min_size": 1, "max_size": pool_max}
    connector = procrastinate.PsycopgConnector(conninfo=dsn, **sizes)
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


async def procrastinate_worker(dsn: str, queue: str, concurrency: int) -> None:
    app = procrastinate_app(dsn, pool_max=max(2, min(concurrency + 1, 10)))
    async with app.open_async():
        await app.run_worker_async(
            queues=[queue],
            concurrency=concurrency,
            wait=False,
            install_signal_handlers=False,
            listen_notify=False,
        )


async def procrastinate_idle(dsn: str, queue: str, seconds: float) -> None:
    """An idle worker with procrastinate's defaults (LISTEN/NOTIFY on, 5 s polling, pool)."""
    app = procrastinate_app(dsn, pool_max=None)
    async with app.open_async():
        task = asyncio.create_task(
            app.run_worker_async(queues=[queue], install_signal_handlers=False)
        )
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def procrastinate_defer(dsn: str, queue: str, n: int) -> None:
    app = procrastinate_app(dsn)
    async with app.open_async():
        task = app.tasks["noop"].configure(queue=queue)
        for start in range(0, n, 1000):
            await task.batch_defer_async(*({} for _ in range(min(1000, n - start))))


# -- arq ------------------------------------------------------------------------------------
async def arq_noop(ctx: dict[str, Any]) -> None:
    return None


async def arq_worker(queue: str, concurrency: int) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker

    worker = Worker(
        functions=[arq_noop],
        queue_name=queue,
        burst=True,
        max_jobs=concurrency,
        keep_result=120,
        handle_signals=False,
        poll_delay=0.05,
        redis_settings=RedisSettings(host=REDIS_HOST, port=REDIS_PORT),
    )
    try:
        await worker.main()
    finally:
        await worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("system", choices=["procrastinate", "procrastinate-idle", "arq"])
    parser.add_argument("--dsn", default="")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # "App is instantiated in the main Python module": true, and harmless for a bench.
    logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)
    if args.system == "procrastinate":
        asyncio.run(procrastinate_worker(args.dsn, args.queue, args.concurrency))
    elif args.system == "procrastinate-idle":
        asyncio.run(procrastinate_idle(args.dsn, args.queue, args.seconds))
    else:
        asyncio.run(arq_worker(args.queue, args.concurrency))


if __name__ == "__main__":
    main()
