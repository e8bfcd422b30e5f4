"""Issue 9: the worker's HTTP port: metrics after real jobs, probes, direct dispatch."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack

Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]
KEY = "test-internal-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _started(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} {labels} not found")


@pytest.mark.parametrize("log_level", ["INFO", "WARNING"])
def test_metrics_count_real_jobs(
    start_worker: Start,
    submit: Submit,
    queue: QueueClient,
    unique: Callable[[str], str],
    log_level: str,
) -> None:
    """At any log level: the counters come from the job events, not from the log lines
    (at WARNING the claimed and completed lines are not written)."""
    name, port = unique("q"), free_port()
    jobs = submit(3, queue_name=name, payload={"mode": "ok"})
    (bad,) = submit(queue_name=name, payload={"mode": "permanent"})
    worker = start_worker(
        "--queue",
        name,
        "--http-port",
        str(port),
        "--http-host",
        "127.0.0.1",
        env={"SUPAWORKER_LOG_LEVEL": log_level},
    )
    wait_for(_started(port), 30, "http port")
    wait_for(lambda: all(queue.get(j.id).status.is_finished for j in [*jobs, bad]), 30, "jobs")
    time.sleep(0.3)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    worker.stop()
    assert _metric(text, "supaworker_jobs_total", queue=name, outcome="completed") == 3
    assert _metric(text, "supaworker_jobs_total", queue=name, outcome="failed") == 1
    assert _metric(text, "supaworker_job_duration_seconds_count", queue=name) == 4
    assert _metric(text, "supaworker_rpc_duration_seconds_count", function="claim_next_job") >= 1
    assert _metric(text, "supaworker_jobs_in_flight") == 0
    assert _metric(text, "supaworker_queue_jobs", status="completed") >= 3


def test_http_port_answers_on_loopback_only_by_default(
    start_worker: Start, unique: Callable[[str], str]
) -> None:
    """Without --http-host the port is 127.0.0.1's alone. 127.0.0.2 is this host's loopback
    too, so a socket on 0.0.0.0 (every address) would answer there: the check needs no
    public interface on the test machine."""
    port = free_port()
    worker = start_worker("--queue", unique("q"), "--http-port", str(port))
    wait_for(_started(port), 30, "http port")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.2:{port}/healthz", timeout=2)
    worker.stop()


def test_readiness_flips_when_postgrest_is_down(
    start_worker: Start, stack: StackConfig, unique: Callable[[str], str]
) -> None:
    port = free_port()
    worker = start_worker(
        "--queue", unique("q"), "--http-port", str(port), "--http-host", "127.0.0.1"
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: _started(port)() and httpx.get(f"{base}/readyz").status_code == 200, 30, "ready"
    )
    dev_stack.stop_postgrest(stack)
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 503, 30, "not ready")
        assert httpx.get(f"{base}/healthz").status_code == 200  # alive, just not ready
        assert worker.proc.poll() is None  # a transient fault never kills the worker
    finally:
        dev_stack.start_postgrest(stack)
    wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "ready again")
    worker.stop()


def test_internal_process_runs_the_document_on_this_worker(
    start_worker: Start,
    submit: Submit,
    queue: QueueClient,
    unique: Callable[[str], str],
    make_user: Callable[..., object],
    admin_db: object,
) -> None:
    name, port = unique("q"), free_port()
    # A cancelled job frees its document; /internal/process re-queues it. Cancelled before any
    # worker runs, so that no claim races the cancel.
    (job,) = submit(queue_name=name, payload={"mode": "ok"})
    queue.cancel(job.id)
    worker = start_worker(
        "--queue",
        name,
        "--http-port",
        str(port),
        "--http-host",
        "127.0.0.1",
        env={"SUPAWORKER_INTERNAL_API_KEY": KEY},
    )
    other = start_worker("--queue", name)  # must never get the direct job
    wait_for(_started(port), 30, "http port")
    url = f"http://127.0.0.1:{port}/internal/process"
    response = httpx.post(
        url,
        json={"user_document_id": str(job.user_document_id)},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert queue.get(body["job_id"]).assigned_to == worker.worker_id
    worker.stop()
    other.stop()


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}"])
def test_internal_process_refuses_a_wrong_key(
    start_worker: Start, unique: Callable[[str], str], header: str | None
) -> None:
    port = free_port()
    worker = start_worker(
        "--queue",
        unique("q"),
        "--http-port",
        str(port),
        "--http-host",
        "127.0.0.1",
        env={"SUPAWORKER_INTERNAL_API_KEY": KEY},
    )
    wait_for(_started(port), 30, "http port")
    headers = {"Authorization": header} if header else {}
    response = httpx.post(
        f"http://127.0.0.1:{port}/internal/process",
        json={"user_document_id": "00000000-0000-0000-0000-000000000000"},
        headers=headers,
    )
    worker.stop()
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_internal_process_answers_202_on_timeout(
    start_worker: Start, submit: Submit, queue: QueueClient, unique: Callable[[str], str]
) -> None:
    name, port = unique("q"), free_port()
    worker = start_worker(
        "--queue",
        name,
        "--http-port",
        str(port),
        "--http-host",
        "127.0.0.1",
        env={"SUPAWORKER_INTERNAL_API_KEY": KEY},
    )
    wait_for(_started(port), 30, "http port")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 5})
    queue.cancel(job.id)
    # If the worker had claimed it, the cancel lands at its next heartbeat; until then the
    # document's job is still running, and the request below would wait for that one.
    wait_for(lambda: queue.get(job.id).status == JobStatus.CANCELLED, 30, "cancelled")
    response = httpx.post(
        f"http://127.0.0.1:{port}/internal/process?timeout=0.5",
        json={
            "user_document_id": str(job.user_document_id),
            "payload": {"mode": "sleep", "seconds": 3},
        },
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    wait_for(lambda: queue.get(job_id).status == JobStatus.COMPLETED, 30, "completion")
    worker.stop()
