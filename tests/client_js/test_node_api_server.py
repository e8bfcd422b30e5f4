"""examples/node-api-server: the processing route in Node (node:http + the supaworker client)
under real Node against the test stack, as the user (their JWT, RLS), with a real worker."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from supaworker import QueueClient
from supaworker_local.config import StackConfig
from tests.conftest import ROOT, StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack


@pytest.fixture()
def api(node: str, js_client_built: None, stack: StackConfig) -> Iterator[str]:
    proc = subprocess.Popen(
        # supabase-js needs a WebSocket class even unused: Node 20 has it behind this flag.
        [node, "--experimental-websocket", "examples/node-api-server/server.mjs", "--port", "0"],
        cwd=ROOT,
        # The anon key only: the server holds no secret, the user's token decides.
        env={**os.environ, "SUPABASE_URL": stack.api_url, "SUPABASE_ANON_KEY": stack.anon_key},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on " in line, line
    yield line.split("listening on ")[1].strip()
    proc.terminate()
    proc.wait(10)


def auth(user: StackUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.token}"}


def test_route_queues_at_once_and_reports_the_job_until_completed(
    api: str,
    make_user: Callable[..., StackUser],
    admin_db: psycopg.Connection[tuple[object, ...]],
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
) -> None:
    user = make_user()
    doc = user.create_document(admin_db)
    queue_name = unique("node-api")
    response = httpx.post(
        f"{api}/documents/{doc}/process",
        json={"priority": 3, "queue": queue_name},
        headers=auth(user),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["success"], body["status"]) == (True, "queued")
    job = queue.get(body["job_id"])
    # The route enqueues as the user: their priority is user_priority (issue 18).
    assert (job.user_document_id, job.user_id, job.user_priority) == (doc, user.id, 3)
    for path in (f"/documents/{doc}/process", f"/jobs/{job.id}"):
        reply = httpx.get(f"{api}{path}", headers=auth(user))
        assert reply.status_code == 200, reply.text
        assert (reply.json()["id"], reply.json()["status"]) == (str(job.id), "pending")
        assert "payload" not in reply.json() and "assigned_to" not in reply.json()

    worker = start_worker("--queue", queue_name)
    try:
        wait_for(
            lambda: (
                httpx.get(f"{api}/jobs/{job.id}", headers=auth(user)).json()["status"]
                == "completed"
            ),
            30,
            "the job to complete",
        )
    finally:
        worker.stop()
    result = httpx.get(f"{api}/jobs/{job.id}", headers=auth(user)).json()["result"]
    assert result == {"doc": str(doc), "attempt": 1}


def test_route_answers_with_the_database_decisions(
    api: str,
    make_user: Callable[..., StackUser],
    admin_db: psycopg.Connection[tuple[object, ...]],
) -> None:
    owner, other = make_user(), make_user()
    doc = owner.create_document(admin_db)
    queued = httpx.post(f"{api}/documents/{doc}/process", headers=auth(owner))
    assert queued.status_code == 202
    job_id = queued.json()["job_id"]

    cases = [
        # Someone else's document: enqueue_job's PT403.
        ("POST", f"/documents/{doc}/process", auth(other), 403, "forbidden"),
        ("POST", f"/documents/{uuid.uuid4()}/process", auth(owner), 404, "not_found"),
        # Someone else's job is invisible (RLS), like a missing one.
        ("GET", f"/jobs/{job_id}", auth(other), 404, "not_found"),
        ("GET", f"/documents/{doc}/process", auth(other), 404, "not_found"),
        ("POST", f"/documents/{doc}/process", {}, 401, "unauthorized"),
        (
            "POST",
            f"/documents/{doc}/process",
            {"Authorization": "Bearer forged"},
            401,
            "unauthorized",
        ),
        ("DELETE", f"/jobs/{job_id}", auth(owner), 405, "method_not_allowed"),
    ]
    for method, path, headers, status, error in cases:
        reply = httpx.request(method, f"{api}{path}", headers=headers)
        assert (reply.status_code, reply.json()["error"]) == (status, error), (
            method,
            path,
            reply.text,
        )
    bad = httpx.post(f"{api}/documents/{doc}/process", content=b"[1]", headers=auth(owner))
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_body")
    wrong_queue = httpx.post(
        f"{api}/documents/{owner.create_document(admin_db)}/process",
        json={"queue": "no spaces"},
        headers=auth(owner),
    )
    assert (wrong_queue.status_code, wrong_queue.json()["error"]) == (400, "invalid_argument")
