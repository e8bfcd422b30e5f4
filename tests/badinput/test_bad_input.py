"""Issue 7: bad input gets a clear error and changes nothing.

Complements tests/sql/test_permissions.py (every function x role x HTTP status),
tests/security (every exposed function swept as anon and user, forged tokens),
tests/functions (edge-function errors), tests/ops/test_operator_cli.py (CLI flags),
tests/unit (settings validation, non-JSON results against the model) and
tests/acceptance/test_run.py (unimportable handler, async handler timeouts). The table of
inputs and answers is in docs/reliability.md."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest

from supaworker import QueueClient
from supaworker.exceptions import (
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueError,
)
from supaworker.models import Job, JobStatus
from supaworker_local import keys
from supaworker_local.config import StackConfig
from tests.chaos.settings import fast_rescue
from tests.conftest import ROOT, StackUser
from tests.security.state import fingerprint
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.stack
Db = psycopg.Connection[tuple[object, ...]]


@pytest.mark.parametrize(
    ("document", "error", "words"),
    [
        ("not-a-uuid", InvalidArgument, "invalid input syntax for type uuid"),
        (str(uuid.UUID(int=7)), NotFound, "not found"),
    ],
)
def test_bad_document_ids(
    queue: QueueClient, admin_db: Db, document: str, error: type[QueueError], words: str
) -> None:
    before = fingerprint(admin_db)
    with pytest.raises(error) as info:
        queue.enqueue(document)
    assert words in str(info.value)
    assert fingerprint(admin_db) == before


def test_another_users_document_is_refused(
    stack: StackConfig, admin_db: Db, make_user: Callable[..., StackUser]
) -> None:
    owner, intruder = make_user(), make_user()
    doc = owner.create_document(admin_db)
    client = QueueClient.connect(stack.api_url, stack.anon_key, access_token=intruder.token)
    before = fingerprint(admin_db)
    with pytest.raises(PermissionDenied) as info:
        client.enqueue(doc)
    client.close()
    assert "does not belong to you" in str(info.value) and info.value.hint
    assert fingerprint(admin_db) == before


@pytest.mark.parametrize("priority", [10**6, -(10**6)])
def test_out_of_range_priority(
    queue: QueueClient, admin_db: Db, make_user: Callable[..., StackUser], priority: int
) -> None:
    doc = make_user().create_document(admin_db)
    before = fingerprint(admin_db)
    with pytest.raises(InvalidArgument) as info:
        queue.enqueue(doc, priority=priority)
    assert "p_priority must be between -1000 and 1000" in str(info.value)
    assert fingerprint(admin_db) == before


def test_oversize_payload(
    queue: QueueClient, admin_db: Db, make_user: Callable[..., StackUser]
) -> None:
    doc = make_user().create_document(admin_db)
    before = fingerprint(admin_db)
    with pytest.raises(PayloadTooLarge) as info:
        queue.enqueue(doc, payload={"blob": "x" * 300_000})
    assert "more than max_payload_bytes" in str(info.value)
    assert "Storage" in (info.value.hint or "")  # what to do instead
    assert fingerprint(admin_db) == before


@pytest.mark.parametrize("token_kind", ["expired", "forged", "wrong_secret_service_role"])
def test_bad_tokens_are_refused(
    stack: StackConfig, admin_db: Db, make_user: Callable[..., StackUser], token_kind: str
) -> None:
    user = make_user()
    doc = user.create_document(admin_db)
    if token_kind == "expired":
        token = keys.user_token(stack.jwt_secret, user.id, user.email, ttl=-120)
    elif token_kind == "forged":
        token = user.token[:-6] + "AAAAAA"
    else:
        token = keys.service_role_key("another-projects-secret-at-least-32-chars-long!")
    client = QueueClient.connect(stack.api_url, stack.anon_key, access_token=token)
    before = fingerprint(admin_db)
    with pytest.raises(PermissionDenied) as info:
        client.enqueue(doc)
    client.close()
    assert info.value.code == "PGRST301"
    assert fingerprint(admin_db) == before


def test_handler_that_kills_its_process_fails_only_that_attempt(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    """With --executor process the child dies, the attempt fails with the exit code, the
    worker lives on and runs the next job."""
    name = unique("q")
    (crash,) = submit(queue_name=name, payload={"mode": "exit"}, max_attempts=1)
    (fine,) = submit(queue_name=name, payload={"mode": "ok"})
    worker = start_worker(
        "--queue", name, "--executor", "process", handler="tests.handlers:handle_process"
    )
    wait_for(lambda: queue.get(fine.id).status == JobStatus.COMPLETED, 60, "the next job")
    row = queue.get(crash.id)
    assert row.status == JobStatus.FAILED
    assert "exited with code 17" in (row.error_message or "")
    assert worker.proc.poll() is None
    time.sleep(0.2)
    assert worker.stop() == 0


def _run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("kind", ["user_token", "mistyped_secret_key", "other_projects_key"])
def test_worker_with_a_wrong_key_exits_2_at_once(
    stack: StackConfig,
    stack_env: dict[str, str],
    admin_db: Db,
    make_user: Callable[..., StackUser],
    kind: str,
) -> None:
    """A key the gateway does not accept is a configuration error (exit 2, "refused"), not an
    outage: before the fix in supaworker/transport.py the worker retried for 30 s and then
    exited 3, "cannot reach the queue"."""
    key = {
        "user_token": make_user().token,
        "mistyped_secret_key": stack.secret_key[:-2] + "xx",
        "other_projects_key": keys.service_role_key("another-projects-secret-32-chars-long!!"),
    }[kind]
    worker_id = f"w-badkey-{uuid.uuid4().hex[:6]}"
    env = {"SUPABASE_URL": stack_env["SUPABASE_URL"], "SUPABASE_SERVICE_ROLE_KEY": key}
    before = fingerprint(admin_db)
    began = time.monotonic()
    result = _run_cli(env, "run", "--handler", "tests.handlers:handle", "--worker-id", worker_id)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - began < 20
    assert "service key was refused" in result.stderr and "Invalid API key" in result.stderr
    assert key not in result.stderr and "Traceback" not in result.stderr
    assert fingerprint(admin_db) == before  # not even a worker row


def test_process_executor_with_a_ctx_handler_exits_2_at_start(
    stack_env: dict[str, str], admin_db: Db
) -> None:
    """A sync `(job, ctx)` handler cannot run in a child process (no JobContext there):
    refused at start with one line. Before, every attempt failed with a TypeError
    (`handler(job)` in the child) until max_attempts."""
    worker_id = f"w-ctxproc-{uuid.uuid4().hex[:6]}"
    before = fingerprint(admin_db)
    result = _run_cli(
        stack_env,
        "run",
        "--handler",
        "tests.handlers:handle_sync",
        "--executor",
        "process",
        "--worker-id",
        worker_id,
        "--burst",
    )
    assert result.returncode == 2, result.stderr
    assert "--executor process cannot run tests.handlers:handle_sync" in result.stderr
    assert "Traceback" not in result.stderr
    assert fingerprint(admin_db) == before  # not even a worker row


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{gpu: true}", "--capabilities is not valid JSON"),
        ('["gpu"]', "--capabilities must be a JSON object"),
    ],
)
def test_worker_with_bad_capabilities_json_exits_2(
    stack_env: dict[str, str], admin_db: Db, value: str, message: str
) -> None:
    worker_id = f"w-badcaps-{uuid.uuid4().hex[:6]}"
    before = fingerprint(admin_db)
    result = _run_cli(
        stack_env,
        "run",
        "--handler",
        "tests.handlers:handle",
        "--worker-id",
        worker_id,
        "--capabilities",
        value,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "example" in result.stderr or "e.g." in result.stderr  # says what a good value is
    assert "Traceback" not in result.stderr
    assert fingerprint(admin_db) == before


def test_enqueue_payload_that_is_json_but_not_an_object_exits_2(
    stack_env: dict[str, str], admin_db: Db, make_user: Callable[..., StackUser]
) -> None:
    doc = make_user().create_document(admin_db)
    before = fingerprint(admin_db)
    result = _run_cli(stack_env, "enqueue", str(doc), "--payload", "[1, 2]")
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "supaworker: error: --payload must be a JSON object",
    )
    assert fingerprint(admin_db) == before


def test_handler_returning_non_json_fails_without_retry(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    """Deterministic, so not retried (max_attempts 5, one attempt spent); the worker lives."""
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "not_json"}, max_attempts=5)
    (after,) = submit(queue_name=name, payload={"mode": "ok"})
    worker = start_worker("--queue", name)
    wait_for(lambda: queue.get(after.id).status == JobStatus.COMPLETED, 60, "the next job")
    row = queue.get(job.id)
    assert (row.status, row.retry_count, row.result) == (JobStatus.FAILED, 1, None)
    assert "not JSON-serialisable" in (row.error_message or "")
    assert worker.stop() == 0


def test_handler_returning_an_oversize_result_fails_without_retry(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    """A result over SUPAWORKER_MAX_RESULT_BYTES (default 256 kB) is not stored: it would be
    sent to the document's owner by Realtime, whose record limit is 1 MB. The attempt fails
    with what to do instead; a result just under the limit completes."""
    name = unique("q")
    (big,) = submit(
        queue_name=name, payload={"mode": "big_result", "bytes": 300_000}, max_attempts=5
    )
    (fits,) = submit(queue_name=name, payload={"mode": "big_result", "bytes": 250_000})
    worker = start_worker("--queue", name)
    wait_for(lambda: queue.get(fits.id).status == JobStatus.COMPLETED, 60, "the job that fits")
    wait_for(lambda: queue.get(big.id).status == JobStatus.FAILED, 60, "the oversize job")
    row = queue.get(big.id)
    assert (row.retry_count, row.result) == (1, None)
    assert "300,012 bytes of JSON, more than the 262,144" in (row.error_message or "")
    assert "Storage" in (row.error_message or "")
    assert len(queue.get(fits.id).result["text"]) == 250_000
    assert worker.proc.poll() is None
    assert worker.stop() == 0


@pytest.mark.parametrize(
    ("executor", "handler"),
    [("process", "tests.handlers:handle_process"), ("thread", "tests.handlers:handle_sync")],
)
def test_sync_handler_hanging_past_its_timeout_frees_the_slot(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
    executor: str,
    handler: str,
) -> None:
    """With one slot, a handler stuck in `time.sleep(60)` fails its attempt after the 1 s
    timeout and the next job runs at once: `process` kills the child, `thread` abandons
    the thread (it cannot be killed; its late result is ignored)."""
    name = unique("q")
    (stuck,) = submit(
        queue_name=name, payload={"mode": "sync_sleep", "seconds": 60}, max_attempts=1
    )
    (after,) = submit(queue_name=name, payload={"mode": "ok"})
    began = time.monotonic()
    worker = start_worker(
        "--queue", name, "--executor", executor, "--job-timeout", "1", handler=handler
    )
    try:
        wait_for(lambda: queue.get(after.id).status == JobStatus.COMPLETED, 30, "the next job")
    except AssertionError:
        raise AssertionError(worker.output()[-4000:]) from None
    assert time.monotonic() - began < 20
    row = queue.get(stuck.id)
    assert row.status == JobStatus.FAILED
    assert "Timed out after 1s" in (row.error_message or "")
    assert worker.proc.poll() is None
    assert worker.stop() == 0


def test_handler_that_kills_the_thread_executors_process_is_rescued_after_the_horizon(
    stack: StackConfig,
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    """With the thread executor the handler shares the worker's process: `os._exit(17)` ends
    the worker with it (its other jobs too). The job stays `processing` until the worker is
    dead for `dead_worker_horizon`, then the rescue counts the attempt as failed, so a
    document that crashes every worker still ends `failed` at max_attempts instead of
    looping. Here the second attempt runs on a `--executor process` worker, which survives."""
    horizon = 3.0
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "exit"}, max_attempts=2)
    with fast_rescue(stack, horizon):
        crashing = start_worker("--queue", name, handler="tests.handlers:handle_sync")
        assert crashing.proc.wait(30) == 17
        died = time.monotonic()
        assert queue.get(job.id).status in (JobStatus.ASSIGNED, JobStatus.PROCESSING)
        survivor = start_worker(
            "--queue", name, "--executor", "process", handler="tests.handlers:handle_process"
        )
        wait_for(lambda: queue.get(job.id).status == JobStatus.FAILED, 60, "the final failure")
        elapsed = time.monotonic() - died
    history = [(e.event, e.worker_id, e.message) for e in queue.history(job.id)]
    rescue = [h for h in history if h[0] == "retry_scheduled"]
    assert rescue == [
        ("retry_scheduled", crashing.worker_id, f"worker {crashing.worker_id} stopped heartbeating")
    ]
    assert history[-1][:2] == ("failed", survivor.worker_id)
    assert "exited with code 17" in (history[-1][2] or "")
    assert elapsed >= horizon - 1  # not rescued before the worker counted as dead
    assert survivor.proc.poll() is None
    assert survivor.stop() == 0


def test_failing_handler_frees_its_slot_at_once(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    submit: Callable[..., list[Job]],
    unique: Callable[[str], str],
) -> None:
    """Six jobs whose handler raises PermanentError, one slot, Realtime on (so the idle poll
    is every 30 s). Each failure must free the slot for the next claim at once. Before the
    fix in supaworker/worker/completer.py (`_write`), the claim triggered by the job's end
    raced the fail_job write, often saw the slot still taken in SQL, and nothing woke the
    loop after the write: the worker sat idle until the next 30 s poll."""
    name = unique("q")
    jobs = submit(6, queue_name=name, payload={"mode": "permanent"}, max_attempts=1)
    began = time.monotonic()
    worker = start_worker("--queue", name, "--concurrency", "1")
    wait_for(
        lambda: all(queue.get(j.id).status == JobStatus.FAILED for j in jobs),
        60,
        "every job to fail",
    )
    assert time.monotonic() - began < 15, worker.output()[-3000:]
    for job in jobs:
        assert "can never be processed" in (queue.get(job.id).error_message or "")
    assert worker.stop() == 0
