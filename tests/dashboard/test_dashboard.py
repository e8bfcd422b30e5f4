"""Issue 9, operator dashboard: examples/dashboard in headless Chromium. A queue admin sees a
real worker and other users' jobs, pauses the worker and retries a failed job with the
buttons, and every change shows up live; a user who is not a queue admin is refused by the
database and the page shows no data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supaworker import QueueClient, rpc
from supaworker.models import Job
from supaworker_local.config import StackConfig
from tests.conftest import ROOT, StackUser
from tests.dashboard.conftest import Api
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists() or shutil.which("node") is None,
        reason="needs Debian's chromium and Node (installed by scripts/setup)",
    ),
]


def run_page(
    stack: StackConfig, token: str, scenario: str, tmp_path: Path, **env: str
) -> dict[str, Any]:
    screenshot = tmp_path / f"dashboard-{scenario}.png"
    out = subprocess.run(
        ["node", str(ROOT / "tests/dashboard/dashboard.mjs")],
        cwd=ROOT,
        env={
            **os.environ,
            "PAGE_URL": f"{stack.api_url}/examples/dashboard/",
            "TOKEN": token,
            "SCENARIO": scenario,
            "SCREENSHOT": str(screenshot),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stderr
    seen: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert screenshot.stat().st_size > 0
    return seen


def test_admin_pauses_a_worker_and_retries_a_failed_job_live(
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    queue: QueueClient,
    submit: Callable[..., list[Job]],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    admin = make_user(admin=True)
    name = unique("dash-ui")
    worker = start_worker("--queue", name, handler="tests.dashboard.handlers:fail_first_attempt")
    # Another user's job that fails on its first attempt, and one scheduled for tomorrow that
    # waits in the same queue until the admin cancels it.
    (failed,) = submit(1, queue_name=name)
    (parked,) = submit(1, queue_name=name, run_at=datetime.now(UTC) + timedelta(days=1))
    wait_for(lambda: queue.get(failed.id).status == "failed", what="the first attempt to fail")
    error = queue.get(failed.id).error_message
    assert error and "the first attempt fails on purpose" in error
    try:
        seen = run_page(
            stack,
            admin.token,
            "admin",
            tmp_path,
            API_URL=stack.api_url,
            SERVICE_KEY=stack.service_role_key,
            WORKER_ID=worker.worker_id,
            QUEUE=name,
            FAILED_JOB_ID=str(failed.id),
            PARKED_JOB_ID=str(parked.id),
        )
    finally:
        worker.stop()
    assert seen["error"] is None, seen

    # worker, status, heartbeat, load, queues, host, action
    wid, status, heartbeat, load, queues, _host, action = seen["workerBefore"]
    assert (wid, status, load.strip(), queues, action) == (
        worker.worker_id,
        "active",
        "0/1",
        name,
        "Pause",
    )
    assert re.fullmatch(r"\d+\.\d s ago", heartbeat) and float(heartbeat.split()[0]) < 5
    assert seen["workerPaused"][1] == "paused" and seen["workerPaused"][-1] == "Resume"
    # job, queue, failed, worker, attempts, error, action
    row = seen["failureRow"]
    assert row[0] == str(failed.id)[:8] and row[3] == worker.worker_id
    assert row[5] == error and row[6] == "Retry"
    # queue, pending, assigned, processing, completed, failed, cancelled
    assert seen["depthBefore"] == [name, "1", "0", "0", "0", "1", "0"]
    assert seen["depthAfter"] == [name, "0", "0", "0", "1", "0", "1"]

    # Worker changes arrived through Realtime (the `workers` topic), including the one the
    # page caused and the resume made elsewhere; the page's own replies show at once. The
    # retried job's owner was followed on their topic while the job was waiting, and its
    # completion (made by the worker) came from that topic or from the 2 s read of the job
    # lists, whichever was first (the other then brings nothing newer).
    log = seen["log"]
    for line in (
        f"realtime vps_workers UPDATE {worker.worker_id} -> paused",
        f"realtime vps_workers UPDATE {worker.worker_id} -> active",
        f"retry {failed.id}: now pending",
        f"cancel {parked.id}: now cancelled",
        f"owner channel jobs:{failed.user_id} SUBSCRIBED",
    ):
        assert line in log, log
    completed = rf"(realtime jobs:{failed.user_id} UPDATE|jobs:) {failed.id} (\w+ )?-> completed"
    assert len(re.findall(completed, log)) == 1, log
    assert "postgres_changes" not in log and "processing_queue" not in log, log
    # The database agrees with the page.
    assert queue.get(failed.id).status == "completed"
    assert queue.get(parked.id).status == "cancelled"
    history = [e.event for e in queue.history(failed.id)]
    assert history[-3:] == ["requeued", "started", "completed"], history
    assert f"resume {worker.worker_id}" not in log  # the page never resumed it itself


def test_non_admin_is_refused_by_the_database_and_sees_nothing(
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    queue: QueueClient,
    admin_db: psycopg.Connection[tuple[object, ...]],
    api: Api,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    user = make_user()
    # The user owns a job and a worker exists, so a page that read the tables anyway would
    # have something to show (RLS lets the user read their own job).
    queue.enqueue(user.create_document(admin_db), queue=unique("dash-own"))
    registration = rpc.register_worker(
        unique("w-dash-own"),
        worker_name=None,
        max_concurrent_jobs=1,
        capabilities={},
        queues=None,
        host=None,
        version=None,
    )
    registered = api.call(stack.service_role_key, registration)
    assert registered.status == 200
    seen = run_page(stack, user.token, "refused", tmp_path)
    assert seen["error"] is None, seen
    assert seen["code"] == "PT403"
    assert "Not a queue admin" in seen["refusal"]
    assert f"user {user.id} is not a queue admin" in seen["refusal"]  # the database's words
    assert seen["dashboardHidden"] is True
    assert seen["rows"] == {"depth": 0, "workers": 0, "failures": 0, "jobs": 0}
    assert seen["realtime"] == "realtime: not connected"
