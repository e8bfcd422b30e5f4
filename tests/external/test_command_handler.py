"""Issue 17: `supaworker run --handler-command`, a handler in another language (a Node child
speaking JSON lines, tests/external/child.mjs), against the real stack."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supaworker import QueueClient
from supaworker.models import Job, JobStatus
from tests.conftest import ROOT
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(shutil.which("node") is None, reason="needs node"),
]

CHILD = Path(__file__).with_name("child.mjs")
COMMAND = f"node {CHILD}"

Start = Callable[..., WorkerProcess]
Submit = Callable[..., list[Job]]


def start_command_worker(
    start_worker: Start, queue_name: str, *args: str, **kw: Any
) -> WorkerProcess:
    return start_worker(
        "--handler-command", COMMAND, "--queue", queue_name, *args, handler=None, **kw
    )


def log_records(worker: WorkerProcess, action: str) -> list[dict[str, Any]]:
    records = []
    for line in worker.output().splitlines():
        if line.startswith("{") and f'"action": "{action}"' in line:
            records.append(json.loads(line))
    return records


def final(queue: QueueClient, job: Job, timeout: float = 30) -> Job:
    ended = {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    wait_for(lambda: queue.get(job.id).status in ended, timeout, f"job {job.id} to end")
    return queue.get(job.id)


def test_completes_with_the_childs_result_and_logs_its_stderr(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "ok"})
    worker = start_command_worker(start_worker, name, "--burst")
    assert worker.proc.wait(60) == 0, worker.output()
    row = queue.get(job.id)
    assert row.status == JobStatus.COMPLETED, row
    (started,) = log_records(worker, "handler_started")
    assert row.result == {
        "doc": str(job.user_document_id),
        "attempt": row.attempt,
        "pid": started["pid"],
    }
    stderr = [r for r in log_records(worker, "handler_stderr") if "starting (ok)" in r["message"]]
    assert [r["job_id"] for r in stderr] == [str(job.id)]
    # Stopping closed the child's stdin and it exited on its own (code 0), not killed.
    (stopped,) = log_records(worker, "handler_stopped")
    assert stopped["code"] == 0


def test_permanent_error_fails_after_one_attempt_with_the_childs_message(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "permanent"}, max_attempts=5)
    worker = start_command_worker(start_worker, name, "--burst")
    assert worker.proc.wait(60) == 0, worker.output()
    row = queue.get(job.id)
    assert (row.status, row.retry_count) == (JobStatus.FAILED, 1)
    assert row.error_message == "this document can never be processed"


def test_retryable_error_completes_on_the_second_attempt(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "fail_once"})
    worker = start_command_worker(start_worker, name)
    row = final(queue, job)
    worker.stop()
    assert (row.status, row.retry_count) == (JobStatus.COMPLETED, 1), row
    assert row.result is not None and row.result["recovered"] is True
    retries = [e for e in queue.history(job.id) if e.event == "retry_scheduled"]
    assert [e.message for e in retries] == ["transient failure"]


def test_progress_is_visible_on_the_row_while_the_job_runs(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "progress", "seconds": 4})
    worker = start_command_worker(start_worker, name)

    def progressed() -> bool:
        row = queue.get(job.id)
        return row.status == JobStatus.PROCESSING and row.progress_percent == 42

    wait_for(progressed, 20, "progress 42 on the running job")
    assert queue.get(job.id).progress_message == "halfway"
    assert final(queue, job).status == JobStatus.COMPLETED
    worker.stop()


def test_a_child_crash_fails_its_attempts_retryably_and_the_child_is_restarted(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (crasher,) = submit(queue_name=name, payload={"mode": "crash", "seconds": 0.5})
    (bystander,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 3})
    worker = start_command_worker(start_worker, name, "--concurrency", "2")
    rows = [final(queue, crasher, 40), final(queue, bystander, 40)]
    worker.stop()
    # Both were running in the child when it died: one failed attempt each, then completed
    # by the restarted child.
    for row in rows:
        assert (row.status, row.retry_count) == (JobStatus.COMPLETED, 1), row
        (retry,) = [e for e in queue.history(row.id) if e.event == "retry_scheduled"]
        assert retry.message is not None and "exited with code 3" in retry.message
    started = [r["pid"] for r in log_records(worker, "handler_started")]
    assert len(started) == 2 and started[0] != started[1]
    assert all(row.result is not None and row.result["pid"] == started[1] for row in rows)
    (exited,) = log_records(worker, "handler_exited")
    assert (exited["code"], exited["jobs"]) == (3, 2)


def test_garbage_on_stdout_is_logged_and_ignored(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "garbage"})
    worker = start_command_worker(start_worker, name, "--burst")
    assert worker.proc.wait(60) == 0, worker.output()
    row = queue.get(job.id)
    assert row.status == JobStatus.COMPLETED and row.retry_count == 0, row
    assert row.result is not None and row.result["survived"] is True
    ignored = [r["line"] for r in log_records(worker, "handler_line_ignored")]
    assert len(ignored) == 6, ignored  # every line the child wrote but the result
    assert ignored[0] == "this is not JSON\n"
    assert len(log_records(worker, "handler_started")) == 1  # the child was not restarted


def test_timeout_sends_a_cancel_then_kills_an_unanswering_child_and_restarts_it(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "hang"}, timeout_seconds=1)
    worker = start_command_worker(start_worker, name, env={"SUPAWORKER_HANDLER_CANCEL_GRACE": "1"})
    row = final(queue, job, 40)
    worker.stop()
    assert (row.status, row.retry_count) == (JobStatus.COMPLETED, 1), row
    (retry,) = [e for e in queue.history(job.id) if e.event == "retry_scheduled"]
    assert retry.message == "Timed out after 1s"
    output = worker.output()
    assert f"cancel received for {job.id}" in output  # the child got the cancel line
    (killed,) = log_records(worker, "handler_killed")
    assert killed["job_id"] == str(job.id)
    started = [r["pid"] for r in log_records(worker, "handler_started")]
    assert len(started) == 2 and killed["pid"] == started[0]
    assert row.result == {"pid": started[1], "attempt": row.attempt}


def test_jobs_up_to_the_concurrency_run_at_once_in_the_one_child(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    jobs = submit(3, queue_name=name, payload={"mode": "sleep", "seconds": 2})
    began = time.monotonic()
    worker = start_command_worker(start_worker, name, "--burst", "--concurrency", "3")
    assert worker.proc.wait(60) == 0, worker.output()
    rows = [queue.get(j.id) for j in jobs]
    assert all(r.status == JobStatus.COMPLETED for r in rows), rows
    results = [r.result for r in rows if isinstance(r.result, dict)]
    assert len({r["pid"] for r in results}) == 1  # one process
    assert max(r["max_in_flight"] for r in results) == 3
    assert max(r["started"] for r in results) < min(r["ended"] for r in results)  # overlap
    assert time.monotonic() - began < 20


def test_cancel_of_a_running_job_reaches_the_child_which_keeps_running(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "wait_cancel"})
    worker = start_command_worker(start_worker, name, env={"SUPAWORKER_HANDLER_CANCEL_GRACE": "2"})
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 20, "job running")
    queue.cancel(job.id)
    row = final(queue, job)
    assert row.status == JobStatus.CANCELLED, row
    worker.wait_for_log(f"cancel received for {job.id}", timeout=10)
    # The child answered the cancel: after the grace it is still the same child.
    (later,) = submit(queue_name=name, payload={"mode": "ok"})
    assert final(queue, later).status == JobStatus.COMPLETED
    time.sleep(2.5)
    worker.stop()
    assert log_records(worker, "handler_killed") == []
    (started,) = log_records(worker, "handler_started")
    assert queue.get(later.id).result["pid"] == started["pid"]  # type: ignore[index]


def test_the_readme_node_worker_runs_jobs(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    example = ROOT / "examples" / "handler-command" / "worker.mjs"
    readme = (ROOT / "README.md").read_text()
    code = example.read_text().split("\n", 2)[2]  # after its two comment lines
    assert f"```js\n{code}```" in readme  # the README shows exactly this file
    name = unique("q")
    jobs = submit(2, queue_name=name)
    worker = start_worker(
        "--handler-command", f"node {example}", "--queue", name, "--burst", handler=None
    )
    assert worker.proc.wait(60) == 0, worker.output()
    for job in jobs:
        row = queue.get(job.id)
        assert row.status == JobStatus.COMPLETED, row
        assert row.result is not None and row.result["document"] == str(job.user_document_id)
        assert row.result["processedBy"] == "node"
    assert log_records(worker, "handler_line_ignored") == []
    (stopped,) = log_records(worker, "handler_stopped")
    assert stopped["code"] == 0  # it exits on its own when stdin closes


def test_sigterm_lets_the_childs_jobs_finish_then_stops_the_child(
    queue: QueueClient, start_worker: Start, submit: Submit, unique: Callable[[str], str]
) -> None:
    name = unique("q")
    (job,) = submit(queue_name=name, payload={"mode": "sleep", "seconds": 2})
    worker = start_command_worker(start_worker, name, "--shutdown-timeout", "20")
    wait_for(lambda: queue.get(job.id).status == JobStatus.PROCESSING, 20, "job running")
    assert worker.stop() == 0, worker.output()
    assert queue.get(job.id).status == JobStatus.COMPLETED
    (stopped,) = log_records(worker, "handler_stopped")
    assert stopped["code"] == 0  # stdin closed after the drain: it exited on its own
    assert log_records(worker, "handler_exited") == []
