"""Issue 4: `supaworker run` as a subprocess against the local stack."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import psycopg
import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus, WorkerStatus
from tests.conftest import ROOT
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack

Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]


def statuses(queue: QueueClient, jobs: list[Job]) -> list[str]:
    return [queue.get(j.id).status.value for j in jobs]


def test_burst_worker_runs_jobs_and_stores_results(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    jobs = submit(6, queue_name=name, payload={"mode": "ok"})
    worker = start_worker("--burst", "--queue", name, "--concurrency", "3")
    code = worker.proc.wait(60)
    assert code == 0, worker.output()
    for job in jobs:
        row = queue.get(job.id)
        assert row.status == JobStatus.COMPLETED
        assert row.result == {"doc": str(job.user_document_id), "attempt": row.attempt}
        assert row.assigned_to == worker.worker_id
    assert any(
        w.worker_id == worker.worker_id and w.status == WorkerStatus.OFFLINE
        for w in queue.workers()
    )


def test_a_handler_reads_through_the_workers_supabase_client(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "read_doc"})
    worker = start_worker("--burst", "--queue", name)
    assert worker.proc.wait(60) == 0, worker.output()
    row = queue.get(job.id)
    assert row.status == JobStatus.COMPLETED, row.error_message
    assert row.result == {"rows": [{"id": str(job.user_document_id)}]}


def test_exception_retries_with_backoff_then_succeeds(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "fail_until", "failures": 2})
    worker = start_worker("--queue", name)
    wait_for(lambda: queue.get(job.id).status == JobStatus.COMPLETED, 60, "retries")
    worker.stop()
    row = queue.get(job.id)
    assert row.retry_count == 2 and row.result == {"recovered_after": 2}
    history = queue.history(job.id)
    assert [e.event for e in history].count("retry_scheduled") == 2
    # Backoff: each retry waited before being claimed again (base 2 s, jittered to >= 1 s).
    retried = [e.created_at for e in history if e.event == "retry_scheduled"]
    claimed = [e.created_at for e in history if e.event == "started"]  # claimed with start
    waits = [(c - r).total_seconds() for r, c in zip(retried, claimed[1:], strict=True)]
    assert all(w >= 0.9 for w in waits), waits


def test_permanent_error_fails_at_once(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "permanent"}, max_attempts=5)
    worker = start_worker("--burst", "--queue", name)
    assert worker.proc.wait(60) == 0
    row = queue.get(job.id)
    assert row.status == JobStatus.FAILED and row.retry_count == 1
    assert "can never be processed" in (row.error_message or "")


def test_job_timeout_fails_the_attempt(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 30}, max_attempts=1)
    worker = start_worker("--burst", "--queue", name, "--job-timeout", "0.5")
    assert worker.proc.wait(60) == 0
    row = queue.get(job.id)
    assert row.status == JobStatus.FAILED
    assert "Timed out after 0.5s" in (row.error_message or "")


def test_burst_exits_zero_when_nothing_is_claimable(
    start_worker: Start, unique: Callable[[str], str]
) -> None:
    worker = start_worker("--burst", "--queue", unique("empty"))
    assert worker.proc.wait(30) == 0


def test_sigterm_drains_running_jobs(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 1.5})
    worker = start_worker("--queue", name, "--shutdown-timeout", "20")
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 30, "start")
    assert worker.stop() == 0
    assert queue.get(job.id).status == JobStatus.COMPLETED


def test_sigterm_past_the_timeout_releases_jobs_without_spending_attempts(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 60})
    worker = start_worker("--queue", name, "--shutdown-timeout", "0.5")
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 30, "start")
    began = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - began < 10
    row = queue.get(job.id)
    assert (row.status, row.retry_count, row.assigned_to) == (JobStatus.PENDING, 0, None)
    assert "released" in [e.event for e in queue.history(job.id)]


def test_second_signal_forces_the_stop(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 60})
    worker = start_worker("--queue", name, "--shutdown-timeout", "60")
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 30, "start")
    worker.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.proc.send_signal(signal.SIGINT)
    assert worker.proc.wait(15) == 130
    assert queue.get(job.id).status == JobStatus.PENDING


def test_pause_and_resume_are_obeyed(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    worker = start_worker("--queue", name)
    wait_for(
        lambda: any(w.worker_id == worker.worker_id for w in queue.workers()), 30, "registration"
    )
    queue.pause(worker.worker_id)
    time.sleep(1.5)  # three heartbeats: the worker has seen it
    (job,) = submit(queue_name=name, payload={"mode": "ok"})
    time.sleep(1.5)
    assert queue.get(job.id).status == JobStatus.PENDING
    queue.resume(worker.worker_id)
    wait_for(lambda: queue.get(job.id).status == JobStatus.COMPLETED, 30, "resume")
    worker.stop()


def test_cancel_of_a_running_job_is_obeyed(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 60})
    worker = start_worker("--queue", name)
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 30, "start")
    assert queue.cancel(job.id).cancel_requested
    wait_for(lambda: queue.get(job.id).status == JobStatus.CANCELLED, 10, "cancellation")
    worker.stop()


def test_progress_is_reported(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "progress", "steps": 4, "step_seconds": 0.6})
    worker = start_worker("--queue", name)
    seen: set[float] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = queue.get(job.id)
        if row.progress_percent is not None:
            seen.add(row.progress_percent)
        if row.status == JobStatus.COMPLETED:
            break
        time.sleep(0.1)
    worker.stop()
    assert {25.0, 50.0, 75.0} & seen, seen


@pytest.mark.parametrize(
    ("executor", "handler"),
    [
        ("thread", "tests.handlers:handle_sync"),
        ("process", "tests.handlers:handle_process"),
    ],
)
def test_cpu_bound_sync_handler_does_not_delay_heartbeats(
    queue: QueueClient,
    start_worker: Start,
    submit: Submit,
    unique: Callable[[str], str],
    admin_db: psycopg.Connection[tuple[object, ...]],
    executor: str,
    handler: str,
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "cpu", "seconds": 4})
    worker = start_worker("--queue", name, "--executor", executor, handler=handler)
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 30, "start")
    beats: list[datetime] = []
    while queue.get(job.id).status == JobStatus.PROCESSING:
        row = admin_db.execute(
            "select last_heartbeat from public.vps_workers where worker_id=%s", (worker.worker_id,)
        ).fetchone()
        assert row is not None and isinstance(row[0], datetime)
        if not beats or row[0] != beats[-1]:
            beats.append(row[0])
        time.sleep(0.05)
    worker.stop()
    assert queue.get(job.id).status == JobStatus.COMPLETED
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(beats)]
    assert len(beats) >= 5, beats  # ~4 s of work at one beat every 0.5 s
    assert max(gaps) < 1.5, gaps


def test_unimportable_handler_exits_2_with_one_line(stack_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", "run", "--handler", "no_such_mod:fn"],
        cwd=ROOT,
        env={**stack_env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "supaworker: error: Cannot import module 'no_such_mod' for --handler: "
        "ModuleNotFoundError: No module named 'no_such_mod'"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_key_exits_2_with_one_line(stack_env: dict[str, str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "SUPABASE_URL": stack_env["SUPABASE_URL"]}
    result = subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", "run", "--handler", "tests.handlers:handle"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SUPABASE_SERVICE_ROLE_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_key_exits_2(stack_env: dict[str, str]) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "SUPABASE_URL": stack_env["SUPABASE_URL"],
        "SUPABASE_SERVICE_ROLE_KEY": stack_env["SUPABASE_ANON_KEY"],
    }
    result = subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", "run", "--handler", "tests.handlers:handle"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "service key was refused" in result.stderr
