"""A new user adopts supaworker in their own Supabase project, from the built wheel with the
`[local]` extra in a fresh venv, far from this repository: `supaworker init` (twice),
`supaworker dev up` on its own ports, their own `user_documents` (extra columns, their own
policy) and their other table intact, a worker completing a job. Then the upgrade path: a
project initialised by an older supaworker (a subset of the migrations) refuses workers and
operator commands until `supaworker init` adds exactly the missing migrations."""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from supaworker import schema
from supaworker_local.config import StackConfig
from tests.conftest import ROOT
from tests.install.conftest import Installed, clean_env, free_ports

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

SUPABASE_CLI = str(ROOT / "node_modules" / ".bin" / "supabase")
CONFIG_TOML = 'project_id = "my-app"\n\n[db]\nmajor_version = 15\n'
# The user's own schema, dated after anything supaworker ships: their documents table with
# more columns and their own policy, and a table supaworker knows nothing about.
APP_MIGRATION = """
create table public.user_documents (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  title text not null default 'untitled',
  body text,
  tags text[] not null default '{}',
  created_at timestamptz not null default now()
);
alter table public.user_documents enable row level security;
create policy "app reads own documents" on public.user_documents
  for select to authenticated using ((select auth.uid()) = user_id);
grant select, insert, update, delete on public.user_documents to authenticated, service_role;

create table public.invoices (
  id bigint generated always as identity primary key,
  amount numeric not null
);
alter table public.invoices enable row level security;
"""
APP_MIGRATION_FILE = "20270101000000_app.sql"
HANDLER = """
async def process_user_document(job, ctx):
    rows = await ctx.supabase.table("user_documents").select("id, title").eq(
        "id", str(job.user_document_id)).execute()
    return {"title": rows.data[0]["title"]}
"""


@dataclass
class UserProject:
    installed: Installed
    root: Path
    tools_dir: Path
    ports: list[str]

    def run(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.installed.supaworker, *args],
            cwd=cwd or self.root,
            env=clean_env({"SUPAWORKER_TOOLS_DIR": str(self.tools_dir), **(env or {})}),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        result = self.run(*args, cwd=cwd)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def stack_env(self) -> dict[str, str]:
        return dict(json.loads(self.ok("dev", "env", "--json")))

    def config(self) -> StackConfig:
        return StackConfig.load(self.root / ".supaworker")

    def tree(self) -> dict[str, bytes]:
        base = self.root / "supabase"
        return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def make_project(base: Path, installed: Installed, tools_dir: Path) -> UserProject:
    root = base / "my-app"
    (root / "supabase" / "migrations").mkdir(parents=True)
    (root / "supabase" / "config.toml").write_text(CONFIG_TOML)
    (root / "myapp").mkdir()
    (root / "myapp" / "__init__.py").write_text("")
    (root / "myapp" / "processing.py").write_text(textwrap.dedent(HANDLER))
    assert ROOT not in root.parents
    return UserProject(installed, root, tools_dir, free_ports())


@pytest.fixture()
def user_project(
    tmp_path: Path, local_install: Installed, seeded_tools: Path
) -> Iterator[UserProject]:
    project = make_project(tmp_path, local_install, seeded_tools)
    yield project
    project.run("dev", "down")


def a_document(project: UserProject, title: str) -> uuid.UUID:
    """A user (`supaworker dev user`) and one of their documents, inserted as the app would."""
    user = json.loads(project.ok("dev", "user", f"{uuid.uuid4().hex[:8]}@example.test", "--json"))
    with psycopg.connect(project.config().admin_db_url) as conn:
        row = conn.execute(
            "insert into public.user_documents (user_id, title) values (%s, %s) returning id",
            (user["id"], title),
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def run_worker(project: UserProject, queue: str) -> subprocess.CompletedProcess[str]:
    return project.run(
        "run",
        "--handler",
        "myapp.processing:process_user_document",
        "--burst",
        "--queue",
        queue,
        "--no-realtime",
        env=project.stack_env(),
    )


def test_init_and_dev_up_keep_the_users_schema_and_the_queue_works(
    user_project: UserProject,
) -> None:
    project = user_project
    (project.root / "supabase" / "migrations" / APP_MIGRATION_FILE).write_text(APP_MIGRATION)
    out = project.ok("init")
    added = sorted(p.name for p in (project.root / "supabase" / "migrations").glob("*.sql"))
    ours = [name for name in added if "_supaworker_" in name]
    assert len(ours) == len(schema.migrations())
    # Dated after the user's own newest migration, in supaworker's order.
    assert all(name > APP_MIGRATION_FILE for name in ours)
    assert [name.split("_supaworker_")[1] for name in ours] == [
        m.filename for m in schema.migrations()
    ]
    assert "added supabase/functions/enqueue-document/index.ts" in out
    tree = project.tree()
    again = project.ok("init")
    assert "nothing to do" in again
    assert project.tree() == tree
    assert "up to date" in project.ok("init", "--check")

    project.ok("dev", "up", *project.ports)
    subfolder = project.root / "myapp"
    # The state folder is found from the project root, as supabase/ is.
    assert project.ok("dev", "status", cwd=subfolder)
    assert json.loads(project.ok("dev", "env", "--json", cwd=subfolder))["SUPABASE_URL"]

    with psycopg.connect(project.config().admin_db_url) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns"
                " where table_schema = 'public' and table_name = 'user_documents'"
            )
        }
        policies = {
            r[0]
            for r in conn.execute(
                "select policyname from pg_policies where tablename = 'user_documents'"
            )
        }
        invoices = conn.execute("select to_regclass('public.invoices')").fetchone()
        version = conn.execute("select public.supaworker_schema_version()").fetchone()
    assert columns == {"id", "user_id", "title", "body", "tags", "created_at"}
    assert policies == {"app reads own documents"}  # none of supaworker's own policies
    assert invoices == ("invoices",)
    assert version == (schema.latest_version(),)

    document = a_document(project, "quarterly report")
    queue = f"adopt-{uuid.uuid4().hex[:6]}"
    enqueued = project.run(
        "enqueue", str(document), "--queue", queue, "--json", env=project.stack_env()
    )
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = json.loads(enqueued.stdout)["id"]
    worker = run_worker(project, queue)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    job = json.loads(project.run("job", job_id, "--json", env=project.stack_env()).stdout)["job"]
    assert (job["status"], job["result"]) == ("completed", {"title": "quarterly report"})

    # The packaged example handler reads user_documents.content, which this table lacks: the
    # job fails at once (no retries) saying so.
    example = f"example-{uuid.uuid4().hex[:6]}"
    enqueued = project.run(
        "enqueue",
        str(a_document(project, "no content")),
        "--queue",
        example,
        "--json",
        env=project.stack_env(),
    )
    assert enqueued.returncode == 0, enqueued.stderr
    ran = project.run(
        "run",
        "--handler",
        "supaworker_local.examples.handler:process_user_document",
        "--burst",
        "--queue",
        example,
        "--no-realtime",
        env=project.stack_env(),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    failed = json.loads(
        project.run(
            "job", json.loads(enqueued.stdout)["id"], "--json", env=project.stack_env()
        ).stdout
    )["job"]
    assert (failed["status"], failed["retry_count"]) == ("failed", 1)  # one attempt only
    assert "reads the text from user_documents.content" in failed["error_message"]

    # The copied edge function, served by the local stack as `supabase functions deploy` would
    # serve it: a signed-in user queues their own document.
    user = json.loads(project.ok("dev", "user", "fn@example.test", "--json"))
    with psycopg.connect(project.config().admin_db_url) as conn:
        row = conn.execute(
            "insert into public.user_documents (user_id, title) values (%s, 'via the function')"
            " returning id",
            (user["id"],),
        ).fetchone()
    assert row is not None
    env = project.stack_env()
    response = httpx.post(
        f"{env['SUPABASE_URL']}/functions/v1/enqueue-document",
        json={"user_document_id": str(row[0])},
        headers={
            "Authorization": f"Bearer {user['access_token']}",
            "apikey": env["SUPABASE_ANON_KEY"],
        },
        timeout=120,
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"

    project.ok("dev", "down")
    stopped = project.run("dev", "status", cwd=subfolder)
    assert stopped.returncode == 1, stopped.stdout


def test_upgrade_adds_exactly_the_missing_migrations_and_the_version_check_guards_it(
    user_project: UserProject,
) -> None:
    project = user_project
    migrations_dir = project.root / "supabase" / "migrations"
    (migrations_dir / APP_MIGRATION_FILE).write_text(APP_MIGRATION)
    project.ok("init")
    # What an older supaworker (the first ten migrations) would have written.
    newer = [p for p in migrations_dir.glob("*_supaworker_*") if int(p.name.split("_")[2]) > 10]
    for path in newer:
        path.unlink()
    older = sorted(p.name for p in migrations_dir.glob("*.sql"))
    check = project.run("init", "--check")
    assert check.returncode == 1, check.stdout
    assert "missing migration supaworker_0011_complete_and_claim.sql" in check.stdout
    project.ok("dev", "up", *project.ports)

    env = project.stack_env()
    document = a_document(project, "before the upgrade")
    refused = run_worker(project, "upgrade")
    expected = (
        f"supaworker: error: the database has supaworker a schema older than version "
        f"{schema.VERSION_MIGRATION} (no supaworker_schema_version()); supaworker "
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith(expected), refused.stderr
    assert "run `supaworker init` and `supabase db push`" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    status = project.run("status", env=env)
    assert status.returncode == 2 and status.stderr.startswith(expected), status.stderr

    out = project.ok("init")
    after = sorted(p.name for p in migrations_dir.glob("*.sql"))
    new = sorted(set(after) - set(older))
    assert [n.split("_supaworker_")[1] for n in new] == [
        m.filename for m in schema.migrations() if m.number > 10
    ]
    assert all(n > max(older) for n in new)
    assert out.count("added supabase/migrations/") == len(new)
    assert project.run("init", "--check").returncode == 0
    # The README's `supabase db push`, with the real CLI (at the local database, not linked).
    pushed = subprocess.run(
        [SUPABASE_CLI, "db", "push", "--db-url", env["SUPABASE_DB_URL"], "--yes"],
        cwd=project.root,
        env=clean_env({"SUPABASE_TELEMETRY_DISABLED": "1"}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    for migration in new:
        assert migration.split("_", 1)[0] in pushed.stdout + pushed.stderr
    enqueued = project.run("enqueue", str(document), "--queue", "upgrade", env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    worker = run_worker(project, "upgrade")
    assert worker.returncode == 0, worker.stdout + worker.stderr
