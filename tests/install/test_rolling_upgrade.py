"""Rolling upgrades: a worker of the previous version, still running while the database is
migrated to this version's schema, keeps completing jobs (the rule in docs/upgrading.md).

The previous version is built from git at PREVIOUS_RELEASE into a fresh venv and run against
the test stack, which has every migration of this checkout."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from supaworker import QueueClient, schema
from supaworker.models import JobStatus
from tests.conftest import ROOT, StackUser
from tests.install.conftest import Installed, build_wheel, clean_env

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

# The last commit before the schema version (migration 0012): the release a deployed fleet
# runs while this one is rolled out. Move it to the previous release's tag at each release.
PREVIOUS_RELEASE = "5388ced"
PREVIOUS_SCHEMA = 11
HANDLER = """
def process_user_document(job, ctx):
    return {"by": ctx.worker_id}
"""


@pytest.fixture(scope="module")
def previous_install(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("previous")
    archive = base / "src.tar"
    made = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), PREVIOUS_RELEASE],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, f"needs the git history (a full clone): {made.stderr}"
    with tarfile.open(archive) as tar:
        tar.extractall(base / "src", filter="data")
    wheel = build_wheel(base / "dist", base / "src")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
    )
    return Installed(venv, wheel)


def test_a_previous_versions_worker_completes_jobs_on_the_new_schema(
    previous_install: Installed,
    tmp_path: Path,
    stack_env: dict[str, str],
    admin_db: psycopg.Connection[tuple[object, ...]],
    make_user: Callable[..., StackUser],
) -> None:
    assert schema.latest_version() > PREVIOUS_SCHEMA  # the pair really spans a migration
    (tmp_path / "myapp.py").write_text(textwrap.dedent(HANDLER))
    queue_name = f"rolling-{uuid.uuid4().hex[:6]}"
    worker_id = f"previous-{uuid.uuid4().hex[:6]}"
    document = make_user().create_document(admin_db)
    with QueueClient.from_env(stack_env) as queue:
        job = queue.enqueue(document, queue=queue_name)
        result = subprocess.run(
            [
                previous_install.supaworker,
                "run",
                "--handler",
                "myapp:process_user_document",
                "--burst",
                "--no-realtime",
                "--queue",
                queue_name,
                "--worker-id",
                worker_id,
            ],
            cwd=tmp_path,
            env=clean_env(
                {
                    "SUPABASE_URL": stack_env["SUPABASE_URL"],
                    "SUPABASE_SERVICE_ROLE_KEY": stack_env["SUPABASE_SERVICE_ROLE_KEY"],
                }
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        done = queue.get(job.id)
    assert (done.status, done.result) == (JobStatus.COMPLETED, {"by": worker_id})
