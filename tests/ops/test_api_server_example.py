"""The shipped example of the design's processing route (examples/api_server.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from supaworker import QueueClient
from tests.conftest import ROOT, StackUser
from tests.worker_fixtures import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture()
def api(stack_env: dict[str, str]) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "examples/api_server.py", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **stack_env},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert "listening" in proc.stdout.readline()
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_route_answers_queued_at_once(
    api: str,
    queue: QueueClient,
    make_user: Callable[..., StackUser],
    admin_db: psycopg.Connection[tuple[object, ...]],
) -> None:
    doc = make_user().create_document(admin_db)
    response = httpx.post(f"{api}/documents/{doc}/process", json={"priority": 3})
    assert response.status_code == 202
    body = response.json()
    assert (body["success"], body["status"]) == (True, "queued")
    job = queue.get(body["job_id"])
    assert (job.user_document_id, job.priority) == (doc, 3)
    wait_for(
        lambda: httpx.get(f"{api}/jobs/{body['job_id']}").json()["status"] == "pending",
        5,
        "job status route",
    )


def test_route_reports_unknown_documents(api: str) -> None:
    response = httpx.post(f"{api}/documents/{uuid.uuid4()}/process")
    assert response.status_code == 404
    assert "not found" in response.json()["message"]
