"""Issue 19, fault 2: two `supaworker run` on one host under one worker id. Before the fix the
second registered over the first: each registration failed the other's running jobs and
their heartbeats reported each other's jobs lost (8 jobs took 18 starts). Now the second is
refused at start (exit 2, one line naming the first), and a restart after a crash (the
holder's pid is dead) still registers at once and fails its predecessor's jobs at once."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack


def test_a_second_process_under_a_live_id_is_refused(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    name = unique("q")
    wid = f"host-{uuid.uuid4().hex[:8]}"
    record = tmp_path / "executions.txt"
    env = {"SUPAWORKER_TEST_RECORD": str(record)}
    jobs = submit(8, queue_name=name, payload={"mode": "sleep", "seconds": 0.5})
    first = start_worker("--queue", name, "--concurrency", "4", worker_id=wid, env=env)
    first.wait_for_log('"action": "worker_registered"')
    second = start_worker("--queue", name, "--concurrency", "4", worker_id=wid, env=env)
    assert second.proc.wait(30) == 2, second.output()
    refused = [ln for ln in second.output().splitlines() if "worker_id_in_use" in ln]
    assert len(refused) == 1, second.output()
    assert f"pid {first.proc.pid}" in refused[0]
    wait_for(
        lambda: all(queue.get(j.id).status == JobStatus.COMPLETED for j in jobs),
        60,
        "the first worker's jobs",
    )
    # Each job ran once: nobody failed or re-ran another process's jobs.
    assert sorted(record.read_text().split()[0::3]) == sorted(str(j.id) for j in jobs)
    assert all(queue.get(j.id).retry_count == 0 for j in jobs)
    assert first.proc.poll() is None
    first.stop()


def test_a_restart_after_a_crash_keeps_the_id_and_fails_old_jobs_at_once(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    name = unique("q")
    wid = f"host-{uuid.uuid4().hex[:8]}"
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 60}, max_attempts=3)
    crashed = start_worker("--queue", name, worker_id=wid)
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 30, "the job running")
    crashed.stop(signal.SIGKILL)
    restarted = start_worker("--queue", name, worker_id=wid)
    restarted.wait_for_log('"action": "worker_registered"')
    history = [e.event for e in queue.history(job.id)]
    assert "retry_scheduled" in history  # failed at once by the registration, not the reaper
    row = queue.get(job.id)
    assert row.retry_count == 1
    assert "restarted while the job was running" in (row.error_message or "")
    restarted.stop(signal.SIGKILL)
