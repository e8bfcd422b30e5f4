"""Issue 5: a signed-in user sees their job go pending -> processing -> completed live in the
example page (headless Chromium), and never sees another user's jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from supaworker import QueueClient
from supaworker_local.config import StackConfig
from tests.conftest import ROOT, StackUser
from tests.worker_fixtures import WorkerProcess

pytestmark = pytest.mark.stack
CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("node") is None,
    reason="needs Debian's chromium and Node (installed by scripts/setup)",
)
def test_user_sees_own_job_progress_live(
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    queue: QueueClient,
    admin_db: psycopg.Connection[tuple[object, ...]],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    stranger = make_user()
    foreign = queue.enqueue(stranger.create_document(admin_db), queue="frontend-foreign")
    user = make_user()
    # The page's jobs go to the default queue; the worker is slowed by the example
    # handler's progress steps so "processing" is visible.
    worker = start_worker(
        "--queue",
        "default",
        "--realtime",
        handler="supaworker_local.examples.handler:process_user_document",
    )
    screenshot = tmp_path / "frontend.png"
    try:
        out = subprocess.run(
            ["node", str(ROOT / "tests/frontend/frontend.mjs")],
            cwd=ROOT,
            env={
                **os.environ,
                "PAGE_URL": f"{stack.api_url}/examples/frontend/",
                "USER_TOKEN": user.token,
                "FOREIGN_JOB_IDS": str(foreign.id),
                "SCREENSHOT": str(screenshot),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.stop()
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["statuses"][0] == "pending", seen
    assert seen["statuses"][-1] == "completed", seen
    # Every transition arrived as a Realtime change, in order (the page logs each one; a
    # fast job may render several in one frame, so the log is the record, not the DOM).
    arrived: list[str] = []
    for line in seen["log"].splitlines():
        if "-> " in line and (not arrived or arrived[-1] != line.split("-> ")[1]):
            arrived.append(line.split("-> ")[1])  # progress updates repeat "processing"
    # The worker claims with start: pending -> processing in one statement, no `assigned`.
    assert arrived == ["pending", "processing", "completed"], seen["log"]
    assert seen["rows"] == 1 and seen["foreignRows"] == 0, seen
    assert screenshot.stat().st_size > 0
