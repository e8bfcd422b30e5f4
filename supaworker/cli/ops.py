"""Operator commands: enqueue, status, workers, jobs, job, retry, cancel, pause, resume, watch.

Tables for people (readable at 80 columns: ids shortened to their first 8 characters),
`--json` for scripts (ids whole). Connection from SUPABASE_URL and a service key, in
the environment or `.env` as for `supaworker run`. Each command first checks that the
database's supaworker schema is one this package works with (exit 2 otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from supaworker import rpc, schema
from supaworker.cli import bulk
from supaworker.client import AsyncQueueClient, QueueClient, credentials_from_env
from supaworker.config import WORKER_CAPABILITY, WorkerSettings
from supaworker.exceptions import ConfigurationError, QueueError, RpcError, SupaworkerError
from supaworker.models import Job, JobStatus, WorkerStatus
from supaworker.realtime_subscription import (
    BroadcastBinding,
    close_quietly,
    subscribe,
)

console = Console()
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
EXIT_QUEUE_ERROR = 1


def credentials() -> tuple[str, str]:
    """SUPABASE_URL and the service key from the environment, else from ./.env (the same
    reading as `supaworker run`: the environment wins)."""
    try:
        settings = WorkerSettings(_env_file=".env")
    except ValueError as exc:  # pydantic's ValidationError: an invalid SUPAWORKER_* variable
        raise ConfigurationError(f"invalid settings in the environment or .env: {exc}") from None
    return credentials_from_env(
        {"SUPABASE_URL": settings.supabase_url, "SUPABASE_SERVICE_ROLE_KEY": settings.service_key}
    )


def _require_schema(client: QueueClient) -> None:
    try:
        version = client.schema_version()
    except QueueError:
        return  # a refused key or an outage: the command's own call says so
    schema.require_version(version)


@contextmanager
def queue_client() -> Iterator[QueueClient]:
    """A client from the environment; any supaworker error becomes one line and exit 1/2."""
    try:
        url, key = credentials()
        client = QueueClient.connect(url, key)
    except SupaworkerError as exc:
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        _require_schema(client)
        yield client
    except ConfigurationError as exc:  # the schema is too old
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(2) from None
    except QueueError as exc:
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(EXIT_QUEUE_ERROR) from None
    finally:
        client.close()


def table(
    *titles: str,
    wrap: tuple[str, ...] = (),
    ids: tuple[str, ...] = (),
    widest: dict[str, int] | None = None,
) -> Table:
    """A table that fits 80 columns: no vertical rules, titles and `ids` (short_id) never cut,
    names longer than `widest` cut with an ellipsis; the last column takes the width left and
    wraps, as do the columns in `wrap`."""
    result = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), collapse_padding=True)
    for title in titles:
        wraps = title in wrap
        result.add_column(
            title,
            min_width=max(len(title), SHORT_ID if title in ids else 0),
            max_width=(widest or {}).get(title),
            no_wrap=not (wraps or title == titles[-1]),
            overflow="fold" if wraps else "ellipsis",
            # The last column takes what is left; the others keep their width.
            ratio=1 if title == titles[-1] else None,
        )
    return result


SHORT_ID = 8


def short_id(value: object) -> str:
    """The first 8 characters of an id: enough to tell rows apart; `--json` has it whole."""
    return str(value)[:SHORT_ID]


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _parse_json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        typer.echo(
            f"supaworker: error: {flag} is not valid JSON: {exc.msg} at column "
            f'{exc.colno} (example: \'{{"lang": "en"}}\')',
            err=True,
        )
        raise typer.Exit(2) from None
    if not isinstance(value, dict):
        typer.echo(f"supaworker: error: {flag} must be a JSON object", err=True)
        raise typer.Exit(2)
    return value


def _job_row(job: Job) -> list[str]:
    return [
        short_id(job.id),
        short_id(job.user_document_id),
        job.status.value,
        job.queue,
        f"{job.retry_count}/{job.max_attempts}",
        job.assigned_to or "",
        _age(job.updated_at),
        (job.error_message or "")[:60],
    ]


def enqueue(
    document_id: Annotated[str | None, typer.Argument(help="A user_documents id")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first")] = 0,
    payload: Annotated[str, typer.Option(help="JSON object handed to the handler")] = "{}",
    queue: Annotated[str, typer.Option(help="Queue name")] = "default",
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="One document per line: an id, or a JSON object with user_document_id and "
            "its own options (sent in calls of up to 10,000)",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Queue a user_documents row for processing (idempotent per document)."""
    body = _parse_json_object(payload, "--payload")
    if (document_id is None) == (from_file is None):
        typer.echo("supaworker: error: give a document id or --from-file FILE", err=True)
        raise typer.Exit(2)
    if from_file is not None:
        _enqueue_file(from_file, priority=priority, payload=body, queue=queue, as_json=as_json)
        return
    with queue_client() as client:
        job = client.enqueue(str(document_id), priority=priority, payload=body, queue=queue)
    if as_json:
        _echo_json(job.model_dump(mode="json"))
    else:
        typer.echo(f"queued job {job.id} ({job.status.value}) for document {document_id}")


def _enqueue_file(path: Path, *, as_json: bool, **defaults: Any) -> None:
    try:
        lines = bulk.read(path)
    except bulk.FileError as exc:
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(2) from None
    jobs: list[Job] = []
    with queue_client() as client:
        for start in range(0, len(lines.items), rpc.MAX_BULK):
            try:
                jobs += client.enqueue_many(lines.items[start : start + rpc.MAX_BULK], **defaults)
            except RpcError as exc:
                # Calls before this one are committed; this one wrote nothing.
                where = bulk.where_in_file(exc, lines, str(path), start)
                typer.echo(f"supaworker: error: {where} ({len(jobs)} queued before)", err=True)
                raise typer.Exit(EXIT_QUEUE_ERROR) from None
    if as_json:
        _echo_json([j.model_dump(mode="json") for j in jobs])
    else:
        pending = sum(1 for j in jobs if j.status == JobStatus.PENDING)
        typer.echo(f"queued {len(jobs)} document(s) from {path} ({pending} pending)")


def status(as_json: JsonFlag = False) -> None:
    """Counts by status, oldest pending age, recent throughput, workers."""
    with queue_client() as client:
        stats = client.stats()
    data = stats.model_dump(mode="json")
    if as_json:
        _echo_json(data)
        return
    counts = table("status", "jobs")
    for name in JobStatus:
        counts.add_row(name.value, str(stats.by_status.get(name.value, 0)))
    console.print(counts)
    oldest = stats.oldest_pending_seconds
    console.print(f"oldest pending: {'-' if oldest is None else f'{oldest:.0f}s'}")
    for key in ("completed_last_minute", "completed_last_hour", "failed_last_hour"):
        if key in data:
            console.print(f"{key.replace('_', ' ')}: {data[key]}")
    console.print("workers: " + ", ".join(f"{k} {v}" for k, v in stats.workers.items()))
    if stats.no_capable_worker:
        # Routing that matches no live worker (queues, requires): these wait for a worker
        # that may never come; say so instead of letting them look merely slow.
        for queue_name, count in sorted(stats.no_capable_worker.items()):
            console.print(f"pending, no capable worker: {queue_name} {count}", soft_wrap=True)


def workers(as_json: JsonFlag = False) -> None:
    """Registered workers with heartbeat age and load."""
    with queue_client() as client:
        rows = client.workers()
    if as_json:
        _echo_json([w.model_dump(mode="json") for w in rows])
        return
    listing = table(
        "worker",
        "status",
        "heartbeat",
        "jobs",
        "queues",
        "host",
        "capabilities",
        widest={"worker": 14, "queues": 8, "host": 10},
    )
    for w in rows:
        # Every worker offers its own id as a capability (direct dispatch): not news here.
        offered = {k: v for k, v in (w.capabilities or {}).items() if k != WORKER_CAPABILITY}
        listing.add_row(
            w.worker_id,
            w.status.value,
            _age(w.last_heartbeat),
            f"{w.current_jobs}/{w.max_concurrent_jobs}",
            ",".join(w.queues or []) or "all",
            w.host or "",
            json.dumps(offered) if offered else "",
        )
    console.print(listing)


def jobs(
    status_filter: Annotated[str | None, typer.Option("--status", help="Only this status")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List jobs, newest first."""
    if status_filter is not None and status_filter not in {s.value for s in JobStatus}:
        typer.echo(
            f"supaworker: error: --status must be one of {', '.join(s.value for s in JobStatus)}",
            err=True,
        )
        raise typer.Exit(2)
    with queue_client() as client:
        rows = client.jobs(status=status_filter, queue=queue, limit=limit)
    if as_json:
        _echo_json([j.model_dump(mode="json") for j in rows])
        return
    listing = table(
        "job",
        "document",
        "status",
        "queue",
        "tries",
        "worker",
        "updated",
        "error",
        ids=("job", "document"),
        widest={"queue": 10, "worker": 12},
    )
    for job in rows:
        listing.add_row(*_job_row(job))
    console.print(listing)


def job(job_id: str, as_json: JsonFlag = False) -> None:
    """One job with its history."""
    with queue_client() as client:
        row = client.get(job_id)
        events = client.history(job_id)
    if as_json:
        _echo_json(
            {
                "job": row.model_dump(mode="json"),
                "history": [e.model_dump(mode="json") for e in events],
            }
        )
        return
    for name, value in row.model_dump(mode="json").items():
        console.print(f"[bold]{name}[/bold]: {value}")
    history = table(
        "when", "event", "from", "to", "worker", "try", "message", widest={"worker": 12}
    )
    for e in events:
        history.add_row(
            e.created_at.strftime("%H:%M:%S.%f")[:-3],
            e.event,
            e.from_status or "",
            e.to_status or "",
            e.worker_id or "",
            str(e.attempt or ""),
            (e.message or "")[:80],
        )
    console.print(history)


def retry(
    job_id: Annotated[str | None, typer.Argument(help="The job to retry")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed job")] = False,
    queue: Annotated[str | None, typer.Option(help="With --all-failed: only this queue")] = None,
) -> None:
    """Re-queue a failed or cancelled job (or all failed ones)."""
    if (job_id is None) == (not all_failed):
        typer.echo("supaworker: error: give a JOB_ID or --all-failed", err=True)
        raise typer.Exit(2)
    with queue_client() as client:
        if all_failed:
            typer.echo(f"re-queued {client.retry_failed(queue)} failed job(s)")
        else:
            assert job_id is not None
            typer.echo(f"job {job_id} is {client.retry(job_id).status.value}")


def cancel(job_id: str) -> None:
    """Cancel a job: pending ones at once, running ones at their worker's next check."""
    with queue_client() as client:
        row = client.cancel(job_id)
    note = (
        " (cancel requested; the worker stops it)"
        if row.cancel_requested and not row.status.is_finished
        else ""
    )
    typer.echo(f"job {job_id} is {row.status.value}{note}")


def pause(worker_id: str) -> None:
    """Stop a worker from claiming (running jobs finish)."""
    with queue_client() as client:
        info = client.set_worker_status(worker_id, WorkerStatus.PAUSED)
    typer.echo(f"worker {info.worker_id} is {info.status.value}")


def resume(worker_id: str) -> None:
    """Let a paused worker claim again."""
    with queue_client() as client:
        info = client.set_worker_status(worker_id, WorkerStatus.ACTIVE)
    typer.echo(f"worker {info.worker_id} is {info.status.value}")


def watch(
    job_id: str,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds")] = None,
    realtime: Annotated[bool, typer.Option(help="Follow changes through Supabase Realtime")] = True,
) -> None:
    """Follow a job's status and progress live until it ends (exit 0 if it completed)."""
    with queue_client() as client:
        job = client.get(job_id)  # a clear error now for an unknown or malformed id
        url, key = credentials()
    owner = str(job.user_id) if job.user_id is not None else None
    try:
        final = asyncio.run(_follow(url, key, job_id, timeout, realtime, owner))
    except QueueError as exc:
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(EXIT_QUEUE_ERROR) from None
    if final is None:
        raise typer.Exit(3)
    raise typer.Exit(0 if final == JobStatus.COMPLETED else 1)


def _on_owner_message(job_id: str, changed: asyncio.Event) -> BroadcastBinding:
    def seen(message: dict[str, Any]) -> None:
        # One message per database statement: the owner's jobs it changed (50 at most).
        records = message.get("records")
        if isinstance(records, list) and any(
            isinstance(row, dict) and row.get("id") == job_id for row in records
        ):
            changed.set()

    return BroadcastBinding("job", seen)


async def _follow(
    url: str,
    key: str,
    job_id: str,
    timeout: float | None,
    realtime: bool,
    owner: str | None = None,
) -> JobStatus | None:
    """Print a line per change; Realtime pushes them, a slow poll is the safety net.

    A job with an owner is followed on the owner's private Broadcast topic `jobs:<user_id>`
    (75_status_topics.sql; the service role may join any). One without (enqueued by the
    service role for no user) has no topic and processing_queue is not published (0026),
    so it is polled, as is every job with --no-realtime."""
    changed = asyncio.Event()
    subscription = None
    if realtime and owner is not None:
        try:
            subscription = await subscribe(
                url, key, f"jobs:{owner}", [_on_owner_message(job_id, changed)], private=True
            )
        except (ConnectionError, OSError, TimeoutError) as exc:
            typer.echo(f"(Realtime unavailable: {exc}; polling)", err=True)
    poll = 5.0 if subscription is not None else 0.5
    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    queue = await AsyncQueueClient.connect(url, key)
    try:
        while True:
            row = await queue.get(job_id)
            line = _watch_line(row)
            if line != last:
                typer.echo(line)
                last = line
            if row.status.is_finished:
                return row.status
            if deadline is not None and time.monotonic() > deadline:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), poll)
            changed.clear()
    finally:
        await queue.aclose()
        if subscription is not None:
            await close_quietly(subscription)


def _watch_line(row: Job) -> str:
    parts = [row.status.value]
    if row.progress_percent is not None:
        parts.append(f"{row.progress_percent:.0f}%")
    if row.progress_message:
        parts.append(row.progress_message)
    if row.assigned_to:
        parts.append(f"on {row.assigned_to}")
    if row.error_message:
        parts.append(f"error: {row.error_message}")
    return " | ".join(parts)


def purge(
    older_than: Annotated[
        float | None, typer.Option(help="Seconds; default: queue_settings.retention (7 days)")
    ] = None,
) -> None:
    """Delete finished jobs (and their history) older than the retention age."""
    with queue_client() as client:
        typer.echo(f"purged {client.purge_finished(older_than)} finished job(s)")


def register(app: typer.Typer) -> None:
    for command in (
        enqueue,
        status,
        workers,
        jobs,
        job,
        retry,
        cancel,
        pause,
        resume,
        watch,
        purge,
    ):
        app.command()(command)
