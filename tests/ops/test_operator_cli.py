"""Issue 4: the operator CLI against the local stack (tables for people, --json for scripts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from tests.conftest import ROOT, StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack
Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]


@pytest.fixture()
def cli(stack_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supaworker", *args],
            cwd=ROOT,
            env={**os.environ, **stack_env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_enqueue_job_and_history(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    submit: Submit,
    queue: QueueClient,
    unique: Callable[[str], str],
) -> None:
    (job,) = submit(queue_name=unique("q"))
    queue.cancel(job.id)
    out = cli(
        "enqueue",
        str(job.user_document_id),
        "--priority",
        "4",
        "--payload",
        '{"lang": "en"}',
        "--json",
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert (row["status"], row["priority"], row["payload"]) == ("pending", 4, {"lang": "en"})
    shown = json.loads(cli("job", str(job.id), "--json").stdout)
    assert [e["event"] for e in shown["history"]] == ["enqueued", "cancelled", "requeued"]
    table = cli("job", str(job.id)).stdout
    assert "requeued" in table


def test_enqueue_from_file_sends_ids_and_json_lines_in_bulk(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    queue: QueueClient,
    admin_db: psycopg.Connection[tuple[object, ...]],
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    user = make_user()
    docs = [user.create_document(admin_db) for _ in range(3)]
    name = unique("q-file")
    listing = tmp_path / "docs.txt"
    listing.write_text(
        f"# uploads of today\n{docs[0]}\n\n{docs[1]}\n"
        + json.dumps({"user_document_id": str(docs[2]), "priority": 5, "payload": {"p": 1}})
        + "\n"
    )
    out = cli("enqueue", "--from-file", str(listing), "--queue", name, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["user_document_id"] for r in rows] == [str(d) for d in docs]
    assert [(r["queue"], r["priority"], r["payload"]) for r in rows] == [
        (name, 0, {}),
        (name, 0, {}),
        (name, 5, {"p": 1}),
    ]
    text = cli("enqueue", "--from-file", str(listing), "--queue", name)
    assert text.stdout.strip() == f"queued 3 document(s) from {listing} (3 pending)"

    bad = tmp_path / "bad.txt"
    bad.write_text(
        f"{docs[0]}\n# a comment\n"
        + json.dumps({"user_document_id": str(docs[1]), "max_attempts": 0})
        + "\n"
    )
    refused = cli("enqueue", "--from-file", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:3: max_attempts must be between 1 and 100, got 0" in refused.stderr
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("not-an-id\n")
    unreadable = cli("enqueue", "--from-file", str(garbage))
    assert unreadable.returncode == 2
    assert f"{garbage}:1: not a document id or a JSON object" in unreadable.stderr
    assert "Traceback" not in refused.stderr + unreadable.stderr


def test_bad_payload_json_is_a_clear_error(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    out = cli("enqueue", "00000000-0000-0000-0000-000000000000", "--payload", "{lang: en}")
    assert out.returncode == 2
    assert "--payload is not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_and_malformed_ids_are_clear_errors(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    unknown = cli("job", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    malformed = cli("cancel", "not-a-uuid")
    assert malformed.returncode == 1
    assert "invalid input syntax for type uuid" in malformed.stderr
    assert "Traceback" not in unknown.stderr + malformed.stderr


def test_status_workers_jobs_pause_resume(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    start_worker: Start,
    submit: Submit,
    queue: QueueClient,
    unique: Callable[[str], str],
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "permanent"})
    worker = start_worker("--queue", name)
    wait_for(lambda: queue.get(job.id).status == JobStatus.FAILED, 30, "failure")
    stats = json.loads(cli("status", "--json").stdout)
    assert stats["by_status"]["failed"] >= 1
    assert "pending" in cli("status").stdout
    listed = json.loads(cli("workers", "--json").stdout)
    assert any(w["worker_id"] == worker.worker_id and w["status"] == "active" for w in listed)
    failed = json.loads(cli("jobs", "--status", "failed", "--limit", "500", "--json").stdout)
    assert str(job.id) in {j["id"] for j in failed}
    assert cli("jobs", "--status", "bogus").returncode == 2
    assert "paused" in cli("pause", worker.worker_id).stdout
    assert "active" in cli("resume", worker.worker_id).stdout
    retried = cli("retry", str(job.id))
    assert retried.stdout.strip() == f"job {job.id} is pending"
    worker.stop()


def test_status_names_pending_jobs_no_live_worker_can_take(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    submit: Submit,
    unique: Callable[[str], str],
) -> None:
    name = unique("q-huge")
    submit(2, queue_name=name, requires={"max_file_size": {"gte": 2**40}})
    out = cli("status")
    assert out.returncode == 0, out.stderr
    assert f"pending, no capable worker: {name} 2" in out.stdout.splitlines()
    stats = json.loads(cli("status", "--json").stdout)
    assert stats["no_capable_worker"][name] == 2


def test_retry_all_failed_and_purge(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    submit: Submit,
    queue: QueueClient,
    start_worker: Start,
    unique: Callable[[str], str],
) -> None:
    name = unique("q")
    jobs = submit(2, queue_name=name, payload={"mode": "ok"})
    worker = start_worker("--queue", name, "--burst")
    assert worker.proc.wait(60) == 0
    out = cli("purge", "--older-than", "0")
    assert out.returncode == 0 and "purged" in out.stdout
    for job in jobs:
        assert cli("job", str(job.id)).returncode == 1  # gone


def test_watch_follows_a_job_to_its_end(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    start_worker: Start,
    submit: Submit,
    unique: Callable[[str], str],
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "progress", "steps": 3, "step_seconds": 0.5})
    worker = start_worker("--queue", name)
    out = cli("watch", str(job.id), "--timeout", "30")
    worker.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("completed")
    assert "Realtime unavailable" not in out.stderr  # (it would poll every 0.5 s)
    # The job lasts 1.5 s and the safety poll runs every 5 s: seeing several progress steps
    # before the end means the changes were pushed by Realtime.
    assert len({line for line in lines[:-1] if "step" in line}) >= 2, lines


def test_watch_polls_a_job_without_an_owner(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    start_worker: Start,
    submit: Submit,
    admin_db: psycopg.Connection[tuple[object, ...]],
    unique: Callable[[str], str],
) -> None:
    """No topic carries a job without an owner (an app's user_documents may allow one), and
    processing_queue is not published: `watch` reads it every 0.5 s instead."""
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "progress", "steps": 3, "step_seconds": 0.7})
    admin_db.execute("update public.processing_queue set user_id = null where id = %s", (job.id,))
    worker = start_worker("--queue", name)
    out = cli("watch", str(job.id), "--timeout", "30")
    worker.stop()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("completed")
    assert out.stderr == ""  # no Realtime subscription tried, none refused
    assert len({line for line in lines[:-1] if "step" in line}) >= 2, lines
