"""`supaworker demo`: the whole idea in one minute, on the local stack.

1. brings up the local stack (`supaworker dev up`) for the project in the working directory,
   or, outside any project, for a throwaway one holding supaworker's packaged schema;
2. signs in a demo user and uploads the sample documents as that user (RLS applies);
3. enqueues them the way an API server would (`QueueClient.enqueue`), one set up to fail
   its first attempt so the retry can be seen;
4. starts two workers, `vps1` and `vps2`, as separate `supaworker run` processes, running the
   Python example handler, or with `--handler node` its JavaScript twin as a
   `--handler-command` child (examples/document_processing/handler.mjs);
5. shows live progress per worker, then a summary table, and stops the workers.
"""

from __future__ import annotations

import enum
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from supabase import ClientOptions, create_client

from supaworker import project
from supaworker.client import QueueClient
from supaworker.models import Job, JobStatus
from supaworker_local import stack, tools
from supaworker_local.cli import ApiPort, DbPort, PostgrestPort, ports_given, starting
from supaworker_local.config import StackConfig, default_state_dir

console = Console()
HANDLER = "supaworker_local.examples.handler:process_user_document"
WORKERS = ("vps1", "vps2")


class DemoHandler(enum.StrEnum):
    python = "python"
    node = "node"


def node_handler_file() -> Path:
    """The JavaScript twin of the example handler, a real file in the installed package (the
    wheel ships it beside handler.py, so the demo runs it without this repository)."""
    return Path(str(resources.files("supaworker_local.examples").joinpath("handler.mjs")))


def handler_args(handler: DemoHandler) -> list[str]:
    """The `supaworker run` arguments that choose the demo's handler. The Node one needs only
    `node` on PATH: the file has no dependencies (it speaks the JSON-lines protocol itself)."""
    if handler is DemoHandler.node:
        return ["--handler-command", f"node {shlex.quote(str(node_handler_file()))}"]
    return ["--handler", HANDLER]


def worker_argv(worker_id: str, handler: DemoHandler) -> list[str]:
    """The command line of one of the demo's workers."""
    return [
        sys.executable,
        "-m",
        "supaworker.cli.main",
        "run",
        *handler_args(handler),
        "--worker-id",
        worker_id,
        "--concurrency",
        "3",
        "--poll-interval",
        "0.5",
        "--heartbeat-interval",
        "1",
        "--shutdown-timeout",
        "10",
    ]


def sample_documents() -> list[tuple[str, str]]:
    folder = resources.files("supaworker_local.examples").joinpath("sample_documents")
    return sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name[0] != ".")


DEMO_CONFIG_TOML = """# A throwaway project made by `supaworker demo`: only supaworker's schema.
project_id = "supaworker-demo"

[db]
major_version = 15
"""


def demo_project(state_dir: Path) -> Path:
    """The project the demo runs: the one around the working directory, else a throwaway one
    in the state folder with the packaged migrations and edge functions (`supaworker init`)."""
    if os.environ.get("SUPAWORKER_PROJECT_DIR"):
        return tools.project_root()
    found = tools.find_project_root(Path.cwd().resolve())
    if found is not None:
        return found
    root = state_dir / "demo-project"
    (root / "supabase").mkdir(parents=True, exist_ok=True)
    config = root / "supabase" / "config.toml"
    if not config.exists():
        config.write_text(DEMO_CONFIG_TOML)
    project.init(project.Project(root))
    return root


def upload_documents(config: StackConfig, user_id: str, token: str) -> list[tuple[str, str]]:
    """Insert the samples as the signed-in user; returns (document id, name)."""
    user = create_client(
        config.api_url, config.anon_key, ClientOptions(headers={"Authorization": f"Bearer {token}"})
    )
    rows = [
        {"user_id": user_id, "name": name, "content": content, "storage_path": f"demo/{name}"}
        for name, content in sample_documents()
    ]
    # RLS checks that user_id is the signed-in user (auth.uid()).
    inserted = cast(list[dict[str, Any]], user.table("user_documents").insert(rows).execute().data)
    return [(str(row["id"]), str(row["name"])) for row in inserted]


def start_worker(
    worker_id: str, env: dict[str, str], log_dir: Path, handler: DemoHandler
) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"demo-{worker_id}.log", "wb")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        worker_argv(worker_id, handler),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _progress_view(jobs: list[Job], total: int, progress: Progress, task_id: TaskID) -> Table:
    by_status = Counter(j.status.value for j in jobs)
    done = by_status["completed"] + by_status["failed"]
    progress.update(task_id, completed=done)
    per_worker = Counter(j.assigned_to for j in jobs if j.status == JobStatus.COMPLETED)
    running = Counter(j.assigned_to for j in jobs if j.status == JobStatus.PROCESSING)
    table = Table("worker", "running", "completed", title="Workers")
    for worker_id in WORKERS:
        table.add_row(worker_id, str(running[worker_id]), str(per_worker[worker_id]))
    grid = Table.grid()
    grid.add_row(progress)
    grid.add_row(table)
    retries = [j for j in jobs if j.retry_count > 0]
    status_line = "  ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
    grid.add_row(f"{status_line}   retried: {len(retries)}   of {total}")
    return grid


def _summary(jobs: list[Job], names: dict[str, str]) -> Table:
    table = Table(
        "document", "status", "worker", "tries", "words", "ease", "top terms", title="Results"
    )
    for column in table.columns:
        column.no_wrap = True
    for job in sorted(jobs, key=lambda j: names.get(str(j.user_document_id), "")):
        result = job.result if isinstance(job.result, dict) else {}
        attempts = job.retry_count + (1 if job.status == JobStatus.COMPLETED else 0)
        table.add_row(
            names.get(str(job.user_document_id), "?"),
            job.status.value,
            job.assigned_to or "",
            str(attempts),
            str(result.get("words", "")),
            str(result.get("flesch_reading_ease", "")),
            ", ".join(result.get("top_terms", [])[:2]) or (job.error_message or "")[:30],
        )
    return table


def demo(
    state_dir: Annotated[Path | None, typer.Option(envvar="SUPAWORKER_STATE_DIR")] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds")] = 120,
    db_port: DbPort = None,
    api_port: ApiPort = None,
    postgrest_port: PostgrestPort = None,
    handler: Annotated[
        DemoHandler,
        typer.Option(
            help="The workers' handler: the Python example, or its JavaScript twin run by "
            'Node as a `--handler-command "node handler.mjs"` child (needs `node` on PATH)',
        ),
    ] = DemoHandler.python,
) -> None:
    """Bring up the local stack, queue sample documents, and watch two workers process them."""
    if handler is DemoHandler.node and shutil.which("node") is None:
        # Before the stack comes up: nothing to undo.
        typer.echo(
            "supaworker: error: --handler node needs Node.js: `node` is not on PATH", err=True
        )
        raise typer.Exit(2)
    directory = (state_dir or default_state_dir()).resolve()
    root = demo_project(directory)
    ports = ports_given(db_port, api_port, postgrest_port)
    config = starting(lambda: stack.up(directory, project=root, **ports))
    console.print(f"[green]✓[/green] local stack at {config.api_url}")
    user_id, token = stack.create_user(config, "demo@example.test")
    documents = upload_documents(config, str(user_id), token)
    names = {doc_id: name for doc_id, name in documents}
    console.print(f"[green]✓[/green] demo user uploaded {len(documents)} documents")

    env = {**os.environ, **stack.env_vars(config)}
    queue = QueueClient.from_env(env)
    job_ids = []
    for index, (doc_id, _name) in enumerate(documents):
        payload = {"simulate_transient_failure": True} if index == 3 else {}
        job_ids.append(queue.enqueue(doc_id, payload=payload).id)
    console.print(
        f"[green]✓[/green] enqueued {len(job_ids)} jobs (the API server's part: "
        'it answers {"success": true, "status": "queued"} at once)'
    )

    workers = [start_worker(w, env, config.path / "log", handler) for w in WORKERS]
    running = escape(" ".join(handler_args(handler)))  # a path is not rich markup
    console.print(
        f"[green]✓[/green] started workers {', '.join(WORKERS)}: supaworker run {running}"
        f" (logs in {config.path / 'log'})\n"
    )
    try:
        jobs = _watch(queue, set(job_ids), timeout)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(30)
    console.print(_summary(jobs, names))
    completed = sum(1 for j in jobs if j.status == JobStatus.COMPLETED)
    retried = [j for j in jobs if j.retry_count > 0]
    console.print(
        f"\n{completed}/{len(jobs)} completed; {len(retried)} job(s) failed once and "
        "were retried automatically with backoff."
    )
    console.print(
        'Explore: `eval "$(supaworker dev env)"; supaworker status; supaworker workers;'
        " supaworker jobs`.  Stop the stack: `supaworker dev down`."
    )
    queue.close()
    if completed != len(jobs):
        raise typer.Exit(1)


def _watch(queue: QueueClient, job_ids: set[uuid.UUID], timeout: float) -> list[Job]:
    progress = Progress(
        TextColumn("processing"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    task_id = progress.add_task("jobs", total=len(job_ids))
    deadline = time.monotonic() + timeout
    jobs: list[Job] = []
    with Live(console=console, refresh_per_second=8) as live:
        while time.monotonic() < deadline:
            jobs = [j for j in queue.jobs(limit=1000) if j.id in job_ids]
            live.update(_progress_view(jobs, len(job_ids), progress, task_id))
            if jobs and all(j.status.is_finished for j in jobs):
                break
            time.sleep(0.25)
    return jobs
