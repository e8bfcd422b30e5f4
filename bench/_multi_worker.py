"""Several `Worker` objects in one process, each with its own HTTP client and worker id.

    python -m bench._multi_worker --count 16 --prefix idle-x --queue Q [--realtime]

Used by idle_cost.py to approximate many idle workers without one Python process each
(what differs from separate processes: one event loop and one interpreter's CPU). Reads
SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY like `supaworker run`. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from bench.handlers import noop
from supaworker.client import AsyncQueueClient
from supaworker.config import WorkerSettings
from supaworker.worker.loop import Worker
from supaworker.worker.wakeup import RealtimeWakeup


async def main(
    count: int, prefix: str, queue: str, poll: float, heartbeat: float, realtime: bool
) -> None:
    url, key = os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_ROLE_KEY"]
    clients = [await AsyncQueueClient.connect(url, key) for _ in range(count)]
    workers = []
    for i, client in enumerate(clients):
        settings = WorkerSettings(
            supabase_url=url,
            service_key=key,
            handler="bench.handlers:noop",
            worker_id=f"{prefix}-{i}",
            queues=[queue],
            poll_interval=poll,
            heartbeat_interval=heartbeat,
            realtime=realtime,
        )
        wakeup = RealtimeWakeup(url, key, settings) if realtime else None
        workers.append(Worker(client, noop, settings, wakeup=wakeup, install_signal_handlers=False))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [w.request_stop() for w in workers])
    try:
        await asyncio.gather(*(w.run() for w in workers))
    finally:
        for client in clients:
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--realtime", action="store_true", help="wake-up through Realtime")
    a = parser.parse_args()
    asyncio.run(main(a.count, a.prefix, a.queue, a.poll_interval, a.heartbeat_interval, a.realtime))
