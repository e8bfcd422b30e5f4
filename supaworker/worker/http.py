"""The worker's own HTTP port (`supaworker run --http-port PORT`).

- `GET /metrics`  Prometheus text format (see `metrics.py`).
- `GET /healthz`  200 while the process's loop turns; for liveness probes.
- `GET /readyz`   200 when registered and the last heartbeat was accepted recently (which
                  also proves PostgREST is reachable); 503 otherwise. For readiness probes.
- `POST /internal/process {"user_document_id": ...}` with `Authorization: Bearer <key>`
  (optional `payload` object and `timeout` seconds; only when `SUPAWORKER_INTERNAL_API_KEY`
  is set): the design's "call a worker directly"
  mode, still through the queue. The job is enqueued with top priority and routed to this
  worker (its `requires` names this worker, which no other worker offers), so retries,
  status and history behave as for any job. Answers 200 with the result when the job
  completes within `timeout` seconds (default 30, from the body or `?timeout=`), 422 when it
  failed or was cancelled, else 202 with the job id so the caller can poll. Wrong or missing
  key: 401; unknown document 404; malformed body 400.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from supaworker.config import WORKER_CAPABILITY
from supaworker.exceptions import InvalidArgument, NotFound, PermissionDenied, QueueError
from supaworker.models import JobStatus
from supaworker.worker.metrics import WorkerMetrics

if TYPE_CHECKING:
    from supaworker.client import AsyncQueueClient
    from supaworker.worker.loop import Worker

log = logging.getLogger("supaworker.worker.http")

DIRECT_PRIORITY = 1000
STATS_CACHE_SECONDS = 5.0


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


class WorkerHTTP:
    def __init__(
        self,
        worker: Worker,
        queue: AsyncQueueClient,
        metrics: WorkerMetrics,
        *,
        internal_api_key: str | None,
        host: str = "127.0.0.1",
        port: int = 9464,
    ) -> None:
        self.worker = worker
        self.queue = queue
        self.metrics = metrics
        self.internal_api_key = internal_api_key
        self.host, self.port = host, port
        self._stats_at = 0.0
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_post("/internal/process", self.process)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        log.info(
            "http on %s:%d (metrics, health%s)",
            self.host,
            self.port,
            ", /internal/process" if self.internal_api_key else "",
            extra={"action": "http_started", "port": self.port},
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- probes and metrics ---------------------------------------------------------------
    def _loop_alive(self) -> bool:
        settings = self.worker.settings
        horizon = max(settings.poll_interval, settings.realtime_poll_interval) * 2 + 10
        return time.monotonic() - self.worker.state.loop_turned_at < horizon

    def _ready(self) -> tuple[bool, str]:
        state = self.worker.state
        if not state.registered:
            return False, "not registered"
        if state.last_heartbeat_ok is None:
            return False, "no heartbeat accepted yet"
        lag = time.monotonic() - state.last_heartbeat_ok
        if lag > self.worker.settings.heartbeat_interval * 3 + 1:
            return False, f"last heartbeat accepted {lag:.0f}s ago (Supabase API unreachable?)"
        return True, "ok"

    async def healthz(self, request: web.Request) -> web.Response:
        alive = self._loop_alive()
        return web.json_response(
            {"status": "ok" if alive else "stalled"}, status=200 if alive else 503
        )

    async def readyz(self, request: web.Request) -> web.Response:
        ready, reason = self._ready()
        return web.json_response(
            {
                "status": "ready" if ready else "not ready",
                "reason": reason,
                "worker_id": self.worker.worker_id,
            },
            status=200 if ready else 503,
        )

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        self.metrics.observe_worker(self.worker)
        if time.monotonic() - self._stats_at > STATS_CACHE_SECONDS:
            self._stats_at = time.monotonic()
            try:
                stats = await asyncio.wait_for(self.queue.stats(), 5)
                self.metrics.observe_stats(stats.model_dump())
            except (QueueError, TimeoutError):
                pass  # queue-wide gauges keep their last values; rpc_errors counts it
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- direct dispatch ------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> bool:
        if not self.internal_api_key:
            return False
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {self.internal_api_key}"
        return hmac.compare_digest(given.encode(), expected.encode())

    async def process(self, request: web.Request) -> web.Response:
        if not self.internal_api_key:
            return _error(404, "not_enabled", "Set SUPAWORKER_INTERNAL_API_KEY to enable this")
        if not self._authorised(request):
            return _error(401, "unauthorized", "Missing or wrong Authorization: Bearer <key>")
        try:
            body: Any = await request.json()
            document_id = uuid.UUID(str(body["user_document_id"]))
            timeout = float(request.query.get("timeout", body.get("timeout", 30)))
            payload = body.get("payload") or {}
            if not isinstance(payload, dict):
                raise TypeError("payload must be an object")
        except (ValueError, KeyError, TypeError):
            return _error(
                400,
                "bad_request",
                'Send JSON {"user_document_id": "<uuid>", "payload": {}?, "timeout": seconds?}',
            )
        try:
            job = await self.queue.enqueue(
                document_id,
                priority=DIRECT_PRIORITY,
                payload=payload,
                requires={WORKER_CAPABILITY: self.worker.worker_id},
                queue=(self.worker.settings.queues or ["default"])[0],
            )
        except NotFound as exc:
            return _error(404, "not_found", str(exc))
        except (InvalidArgument, PermissionDenied) as exc:
            return _error(400, "bad_request", str(exc))
        except QueueError as exc:
            return _error(503, "queue_unavailable", str(exc))
        self.worker.wake()
        return await self._await_job(job.id, timeout)

    async def _await_job(self, job_id: uuid.UUID, timeout: float) -> web.Response:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            try:
                job = await self.queue.get(job_id)
            except QueueError as exc:
                return _error(503, "queue_unavailable", str(exc))
            if job.status.is_finished:
                return web.json_response(
                    {
                        "job_id": str(job.id),
                        "status": job.status.value,
                        "result": job.result,
                        "error": job.error_message,
                    },
                    status=200 if job.status == JobStatus.COMPLETED else 422,
                )
            if time.monotonic() >= deadline:
                return web.json_response(
                    {
                        "job_id": str(job.id),
                        "status": job.status.value,
                        "message": "still running; poll the job",
                    },
                    status=202,
                )
            await asyncio.sleep(0.1)
