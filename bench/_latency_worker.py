"""`supaworker run --realtime` for latency.py, plus one log line when a Realtime event arrives.

    python -m bench._latency_worker --worker-id W --queue Q

The same Worker and RealtimeWakeup as `supaworker run --realtime --log-format json`
(concurrency 1, no-op handler); the only addition is a `bench_wake_event` JSON log line, with
the job id, written the moment the wake-up receives the INSERT of a job (before its jitter),
so that latency.py can measure the worker's own share: event received -> job started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from bench.handlers import noop
from supaworker import logs
from supaworker.client import AsyncQueueClient
from supaworker.config import WorkerSettings
from supaworker.worker.loop import Worker
from supaworker.worker.wakeup import RealtimeWakeup

log = logging.getLogger("supaworker.bench")


class LoggingWakeup(RealtimeWakeup):
    def _on_wake(self, payload: dict[str, Any]) -> None:
        log.info(
            "realtime event",
            extra={"action": "bench_wake_event", "job_id": str(payload.get("job_id"))},
        )
        super()._on_wake(payload)


async def main(worker_id: str, queue: str) -> int:
    url, key = os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_ROLE_KEY"]
    settings = WorkerSettings(
        supabase_url=url,
        service_key=key,
        handler="bench.handlers:noop",
        worker_id=worker_id,
        queues=[queue],
        realtime=True,
    )
    client = await AsyncQueueClient.connect(url, key)
    try:
        worker = Worker(client, noop, settings, wakeup=LoggingWakeup(url, key, settings))
        return await worker.run()
    finally:
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    logs.configure("json", "INFO")
    raise SystemExit(asyncio.run(main(args.worker_id, args.queue)))
