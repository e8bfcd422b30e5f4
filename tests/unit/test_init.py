"""`supaworker init` on project folders (no database): what it writes, what it refuses, what
it leaves alone. The push of what it writes is tested in tests/install/test_adoption.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from supaworker import project, schema
from supaworker.exceptions import SchemaOutdated


def init_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", "init", "--project-dir", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    return tmp_path


def test_the_package_carries_every_migration_in_order() -> None:
    numbers = [m.number for m in schema.migrations()]
    assert numbers == list(range(1, len(numbers) + 1))
    assert schema.latest_version() >= schema.REQUIRED_VERSION
    # The newest migration sets the version function to its own number (docs/upgrading.md).
    newest = schema.migrations()[-1].sql
    assert f"as $$ select {schema.latest_version()} $$" in newest


def test_refuses_a_project_table_of_the_same_name_naming_it(root: Path) -> None:
    mine = root / "supabase" / "migrations" / "20250101000000_jobs.sql"
    mine.write_text("-- my own queue\ncreate table if not exists processing_queue (id int);\n")
    result = init_cli(root)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "supaworker: error: supabase/migrations/20250101000000_jobs.sql already creates table "
        "public.processing_queue, which supaworker creates too: rename or drop yours before "
        "`supaworker init`"
    ]
    assert sorted(p.name for p in mine.parent.iterdir()) == [mine.name]  # nothing written


def test_refuses_a_project_function_of_the_same_name(root: Path) -> None:
    (root / "supabase" / "migrations" / "20250101000000_fn.sql").write_text(
        "create or replace function public.enqueue_job(p text) returns void"
        " language sql as $$ select $$;\n"
    )
    result = init_cli(root)
    assert result.returncode == 2
    assert "already creates function public.enqueue_job" in result.stderr


def test_a_projects_own_user_documents_is_no_conflict(root: Path) -> None:
    (root / "supabase" / "migrations" / "20250101000000_docs.sql").write_text(
        "create table public.user_documents (id uuid primary key, user_id uuid);\n"
    )
    assert init_cli(root).returncode == 0


def test_without_a_supabase_folder_it_says_what_to_do(tmp_path: Path) -> None:
    result = init_cli(tmp_path)
    assert result.returncode == 2
    assert "no supabase/ folder" in result.stderr and "supabase init" in result.stderr


def test_copies_made_before_init_count_as_present(root: Path) -> None:
    first = schema.migrations()[0]
    legacy = root / "supabase" / "migrations" / "20261128000100_user_documents.sql"
    legacy.write_text(first.sql)
    report = project.init(project.Project(root))
    written = [p.name for p in report.written if p.suffix == ".sql"]
    assert not [n for n in written if "_supaworker_0001_" in n]
    assert len(written) == len(schema.migrations()) - 1


def test_versions_follow_the_newest_migration() -> None:
    now = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
    assert project.next_versions(None, 2, now) == ["20261201080000", "20261201080001"]
    assert project.next_versions("20270101000000", 2, now) == ["20270101000001", "20270101000002"]
    assert project.next_versions("20200101000000", 1, now) == ["20261201080000"]
    assert project.next_versions("20270101235959", 1, now) == ["20270102000000"]
    assert project.next_versions("99999999999999999", 1, now) == ["100000000000000000"]


def test_a_projects_shared_folder_and_its_own_function_are_left_alone(root: Path) -> None:
    functions = root / "supabase" / "functions"
    (functions / "_shared").mkdir(parents=True)
    (functions / "_shared" / "http.ts").write_text("export const mine = 1;\n")
    (functions / "job-status").mkdir()
    (functions / "job-status" / "index.ts").write_text("// my own job-status\n")
    result = init_cli(root)
    assert result.returncode == 0, result.stderr
    assert (functions / "_shared" / "http.ts").read_text() == "export const mine = 1;\n"
    assert (functions / "_supaworker" / "http.ts").exists()
    assert (functions / "job-status" / "index.ts").read_text() == "// my own job-status\n"
    assert (
        "skipped supabase/functions/job-status/index.ts (differs from supaworker's; --force "
        "replaces it)" in result.stdout
    )
    # Not a missing file: --check passes, the difference is the user's choice.
    assert init_cli(root, "--check").returncode == 0
    forced = init_cli(root, "--force")
    assert "updated supabase/functions/job-status/index.ts" in forced.stdout
    packaged = project.packaged_function_files()["job-status/index.ts"]
    assert (functions / "job-status" / "index.ts").read_bytes() == packaged


def test_an_unedited_function_file_is_upgraded_an_edited_one_kept(root: Path) -> None:
    project.init(project.Project(root))
    functions = root / "supabase" / "functions"
    manifest_path = functions / project.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    # As if an older supaworker had written these two files; the user then edited one.
    old = b"// an older supaworker's handler\n"
    for relative in ("job-status/handler.ts", "enqueue-document/handler.ts"):
        (functions / relative).write_bytes(old)
        manifest["files"][relative] = hashlib.sha256(old).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    (functions / "enqueue-document/handler.ts").write_bytes(old + b"// mine\n")

    check = init_cli(root, "--check")
    assert check.returncode == 1
    assert "missing or outdated supabase/functions/job-status/handler.ts" in check.stdout
    result = init_cli(root)
    assert "updated supabase/functions/job-status/handler.ts" in result.stdout
    assert "skipped supabase/functions/enqueue-document/handler.ts" in result.stdout
    packaged = project.packaged_function_files()
    assert (functions / "job-status/handler.ts").read_bytes() == packaged["job-status/handler.ts"]
    assert (functions / "enqueue-document/handler.ts").read_bytes() == old + b"// mine\n"


def test_the_packaged_functions_leave_out_tests_and_helpers() -> None:
    files = project.packaged_function_files()
    assert "enqueue-document/index.ts" in files and "_supaworker/auth.ts" in files
    assert not [f for f in files if f.endswith("_test.ts") or "/testing" in f or "assert" in f]


def test_the_repositorys_own_supabase_folder_is_up_to_date() -> None:
    here = Path(__file__).resolve().parents[2]
    report = project.init(project.Project(here), check=True)
    assert report.up_to_date, (report.missing_migrations, report.missing_functions)


@pytest.mark.parametrize(
    ("database", "says"),
    [
        (None, "a schema older than version 12 (no supaworker_schema_version())"),
        (11, "schema version 11"),
    ],
)
def test_an_older_database_is_refused_with_both_versions(database: int | None, says: str) -> None:
    with pytest.raises(SchemaOutdated) as raised:
        schema.require_version(database)
    message = str(raised.value)
    assert f"the database has supaworker {says};" in message
    assert f"needs version {schema.REQUIRED_VERSION} or newer" in message
    assert message.endswith("run `supaworker init` and `supabase db push`")


def test_a_newer_database_is_accepted() -> None:
    schema.require_version(schema.REQUIRED_VERSION)
    schema.require_version(schema.REQUIRED_VERSION + 5)
