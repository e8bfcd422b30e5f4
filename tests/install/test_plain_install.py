"""What a user gets from `pip install supaworker` (the wheel, no extras), run outside this
repository: the product works on its own and the local stack's commands say what to install."""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from supaworker import QueueClient
from supaworker.models import JobStatus
from tests.conftest import ROOT, StackUser
from tests.install.conftest import Installed, clean_env

HANDLER = """
async def process_user_document(job, ctx):
    ctx.progress(50, "half way")
    return {"document": str(job.user_document_id), "by": ctx.worker_id}
"""


def run(
    installed: Installed, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed.supaworker, *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_holds_no_test_or_repository_files(plain_install: Installed) -> None:
    imported = subprocess.run(
        [plain_install.python, "-c", "import supaworker, supaworker_local; print('ok')"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert imported.stdout.strip() == "ok", imported.stderr
    names = zipfile.ZipFile(plain_install.wheel).namelist()
    assert not [n for n in names if n.startswith(("tests/", "bench/", "examples/"))]
    assert "supaworker_local/examples/handler.py" in names
    # `supaworker demo --handler node` runs it from the install (no repository, no npm).
    assert "supaworker_local/examples/handler.mjs" in names


@pytest.mark.parametrize("args", [["dev", "up"], ["dev", "--help"], ["demo"]])
def test_local_stack_commands_say_what_to_install(
    plain_install: Installed, tmp_path: Path, args: list[str]
) -> None:
    result = run(plain_install, args, tmp_path, {})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'supaworker[local]'" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_help_and_version_work_without_extras(plain_install: Installed, tmp_path: Path) -> None:
    for args in (["--help"], ["run", "--help"], ["status", "--help"], ["--version"]):
        result = run(plain_install, args, tmp_path, {})
        assert result.returncode == 0, (args, result.stderr)
    assert run(plain_install, ["--version"], tmp_path, {}).stdout.startswith("supaworker ")


@pytest.mark.stack
def test_a_worker_from_the_wheel_completes_a_job(
    plain_install: Installed,
    tmp_path: Path,
    stack_env: dict[str, str],
    admin_db: psycopg.Connection[tuple[object, ...]],
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    project = tmp_path / "my-app"  # the user's own project, far from this repository
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "processing.py").write_text(textwrap.dedent(HANDLER))
    assert ROOT not in project.parents
    connection = {
        "SUPABASE_URL": stack_env["SUPABASE_URL"],
        "SUPABASE_SERVICE_ROLE_KEY": stack_env["SUPABASE_SERVICE_ROLE_KEY"],
    }
    queue_name = unique("wheel")
    user = make_user()
    document = user.create_document(admin_db)
    with QueueClient.from_env(stack_env) as queue:
        job = queue.enqueue(document, queue=queue_name)
        worker_id = f"wheel-{uuid.uuid4().hex[:8]}"
        result = run(
            plain_install,
            [
                "run",
                "--handler",
                "myapp.processing:process_user_document",
                "--burst",
                "--queue",
                queue_name,
                "--worker-id",
                worker_id,
                "--no-realtime",
            ],
            project,
            connection,
            timeout=90,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        done = queue.get(job.id)
    assert done.status == JobStatus.COMPLETED
    assert done.result == {"document": str(document), "by": worker_id}
    assert done.progress_percent == 100  # completion sets it

    status = run(plain_install, ["status", "--json"], project, connection)
    assert status.returncode == 0, status.stderr
    stats = json.loads(status.stdout)
    assert stats["by_queue"][queue_name]["completed"] == 1
