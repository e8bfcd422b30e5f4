"""What a new adopter met in the operator commands: tables cut at 80 columns, `.env` read by
`run` but not by the operator commands, env vars named twice in `--help`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from supaworker.models import Job
from tests.conftest import ROOT

Submit = Callable[..., list[Job]]


def supaworker(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supaworker", *args],
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "COLUMNS": "80", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.stack
def test_tables_fit_80_columns_with_whole_titles_and_short_ids(
    stack_env: dict[str, str],
    submit: Submit,
    admin_db: psycopg.Connection[tuple[object, ...]],
    unique: Callable[[str], str],
) -> None:
    name = unique("a-rather-long-queue-name")
    (job,) = submit(queue_name=name)
    worker_id = unique("worker-with-a-long-descriptive-name")
    # Rows as long as they get (set directly: the table's layout is under test, not the queue).
    admin_db.execute(
        "insert into public.vps_workers (worker_id, capabilities, host, queues)"
        " values (%s, %s, 'a-host-with-a-long-name.example.com', %s)",
        (worker_id, '{"gpu": true, "languages": ["en", "fr", "de"]}', [name]),
    )
    admin_db.execute(
        "update public.processing_queue set status = 'failed', assigned_to = %s,"
        " error_message = %s, completed_at = now() where id = %s",
        (worker_id, "x" * 200 + " a long error message", job.id),
    )
    outputs = {
        "jobs": supaworker("jobs", "--queue", name, env=stack_env),
        "workers": supaworker("workers", env=stack_env),
        "job": supaworker("job", str(job.id), env=stack_env),
        "status": supaworker("status", env=stack_env),
    }
    titles = {
        "jobs": ["job", "document", "status", "queue", "tries", "worker", "updated", "error"],
        "workers": ["worker", "status", "heartbeat", "jobs", "queues", "host", "capabilities"],
        "job": ["when", "event", "from", "to", "worker", "try", "message"],
        "status": ["status", "jobs"],
    }
    for command, result in outputs.items():
        assert result.returncode == 0, (command, result.stderr)
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, (command, result.stdout)
        header = next(line for line in lines if line.split()[:1] == titles[command][:1])
        assert header.split() == titles[command], (command, header)
    jobs_table = outputs["jobs"].stdout
    assert str(job.id)[:8] in jobs_table and str(job.id) not in jobs_table
    assert str(job.user_document_id)[:8] in jobs_table
    assert "…" not in "".join(re.findall(r"\b[0-9a-f]{1,8}…", jobs_table))  # ids never cut
    admin_db.execute("delete from public.vps_workers where worker_id = %s", (worker_id,))


@pytest.mark.stack
def test_operator_commands_read_dot_env_as_run_does(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        f"SUPABASE_URL={stack_env['SUPABASE_URL']}\n"
        f"SUPABASE_SERVICE_ROLE_KEY={stack_env['SUPABASE_SERVICE_ROLE_KEY']}\n"
    )
    result = supaworker("status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"by_status"' in result.stdout
    bare = supaworker("status", cwd=tmp_path.parent)
    assert bare.returncode == 2 and "SUPABASE_URL is not set" in bare.stderr


@pytest.mark.parametrize(
    "command", [["run"], ["dev", "up"], ["dev", "env"], ["dev", "status"], ["demo"]]
)
def test_each_env_var_is_named_once_in_help(command: list[str]) -> None:
    result = supaworker(*command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    names = re.findall(r"\b(SUPA(?:WORKER|BASE)_[A-Z_]+)\b", result.stdout)
    assert names, result.stdout
    repeated = {n for n in names if names.count(n) > 1}
    assert not repeated, result.stdout


def test_version() -> None:
    result = supaworker("--version")
    assert re.fullmatch(r"supaworker \d+\.\d+\.\d+\n", result.stdout), result.stdout
