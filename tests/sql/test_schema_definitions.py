"""The current definitions (supaworker/sql/schema/*.sql) and the migrations
(supaworker/sql/migrations/*.sql) build the same schema, so the file a reader opens never
drifts from what `supabase db push` deploys.

Each side is loaded into its own fresh database bootstrapped like a Supabase project, as the
migration owner `postgres`, one file per transaction in file-name order (what `db push` does;
test_migrations.py proves the real `db push` applies the migrations). Then the two are compared:
`pg_dump --schema-only` of supaworker's schemas (tables, columns, constraints, indexes,
triggers, functions and their bodies, comments, RLS and policies, ACLs) plus catalog queries
for what such a dump leaves out (publication membership, replica identity, the settings row,
schemas, default privileges, event triggers) and a text comparison of the pg_cron schedules.
"""

from __future__ import annotations

import difflib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from supaworker_local import tools
from supaworker_local.config import StackConfig
from tests.sql.conftest import ScratchDb

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SqlSources:
    """Where the two sides live: the one place to change when the files move."""

    migrations: Path = ROOT / "supaworker" / "sql" / "migrations"
    definitions: Path = ROOT / "supaworker" / "sql" / "schema"


SOURCES = SqlSources()
# supaworker's own schemas; everything else it touches (the Realtime publication, pg_cron) is
# compared by the catalog queries below.
SCHEMAS = ("public", "supaworker_private")


def load(stack: StackConfig, database: str, files: list[Path]) -> None:
    """Run each file as the migration owner, one transaction per file, in order."""
    url = stack.db_url.replace("/postgres?", f"/{database}?")
    with psycopg.connect(url) as conn:
        for path in files:
            try:
                conn.execute(path.read_text())
            except psycopg.Error as exc:
                pytest.fail(f"{path.relative_to(ROOT)} does not load: {exc}")
            conn.commit()


def dump(stack: StackConfig, database: str) -> str:
    result = subprocess.run(
        [
            tools.pg_bin("pg_dump"),
            "--schema-only",
            *(f"--schema={s}" for s in SCHEMAS),
            "--dbname",
            stack.admin_db_url.replace("/postgres?", f"/{database}?"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def normalise(text: str) -> list[str]:
    """The dump without what differs between two identical schemas: pg_dump's per-run
    `\\restrict` key and version banner, and the order of one object's GRANT lines (an ACL's
    entries are stored in the order the grants were made, which carries no meaning)."""
    lines = [
        line
        for line in text.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by"))
    ]
    entries: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("-- Name: ") and entries[-1][-1:] == ["--"]:
            entries.append([entries[-1].pop()])
        entries[-1].append(line)
    out: list[str] = []
    for entry in entries:
        if any("; Type: ACL;" in line for line in entry[:2]):
            head = [line for line in entry if not line.startswith(("GRANT ", "REVOKE "))]
            acl = sorted(line for line in entry if line.startswith(("GRANT ", "REVOKE ")))
            entry = head + acl
        out.extend(entry)
    return out


CATALOG_QUERIES = {
    "schemas": "select nspname from pg_namespace where nspname not like 'pg\\_%' order by 1",
    "publication": "select pubname, schemaname, tablename from pg_publication_tables"
    " order by 1, 2, 3",
    "rls": "select c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,"
    " c.relreplident from pg_class c where c.relnamespace = any (%s::regnamespace[])"
    " and c.relkind = 'r' order by 1",
    "settings": "select to_jsonb(s) - 'updated_at' from public.queue_settings s",
    "default_acl": "select defaclrole::regrole::text, defaclnamespace::regnamespace::text,"
    " defaclobjtype, defaclacl::text from pg_default_acl order by 1, 2, 3",
    # supaworker's policies on realtime.messages (who may join its Broadcast topics).
    "realtime_policies": "select policyname, cmd, roles::text, qual, with_check"
    " from pg_policies where schemaname = 'realtime' order by 1",
    "event_triggers": "select evtname, evtevent, evtfoid::regproc::text from pg_event_trigger"
    " order by 1",
}


def catalog(stack: StackConfig, database: str) -> list[str]:
    url = stack.admin_db_url.replace("/postgres?", f"/{database}?")
    out = []
    with psycopg.connect(url) as conn:
        for name, query in CATALOG_QUERIES.items():
            params = (list(SCHEMAS),) if "%s" in query else None
            for row in conn.execute(query, params).fetchall():
                out.append(f"{name}: {row!r}")
    return out


def cron_schedules(files: list[Path]) -> list[str]:
    """The cron.schedule calls, whitespace-normalised. pg_cron can only schedule from its own
    database (the stack's `postgres`), so a scratch database runs neither side's cron block:
    the calls are compared as text instead (test_migrations.py checks cron.job on the stack)."""
    text = "\n".join(p.read_text() for p in files)
    calls = re.findall(r"perform\s+cron\.schedule\((.*?)\);", text, flags=re.S)
    return sorted(re.sub(r"\s+", " ", call) for call in calls)


def schema_of(stack: StackConfig, database: str) -> list[str]:
    return normalise(dump(stack, database)) + catalog(stack, database)


def diff(migrated: list[str], defined: list[str]) -> str:
    return "\n".join(
        difflib.unified_diff(
            migrated, defined, "from the migrations", "from the definitions", n=4, lineterm=""
        )
    )


def test_the_definitions_build_the_schema_the_migrations_build(
    stack: StackConfig, scratch_db: ScratchDb
) -> None:
    migrations = sorted(SOURCES.migrations.glob("*.sql"))
    definitions = sorted(SOURCES.definitions.glob("*.sql"))
    assert migrations and definitions

    migrated_db, _ = scratch_db()
    defined_db, _ = scratch_db()
    load(stack, migrated_db, migrations)
    load(stack, defined_db, definitions)

    migrated = schema_of(stack, migrated_db)
    defined = schema_of(stack, defined_db)
    # The dump really holds the schema (a broken dump of two empty databases would agree).
    assert any("CREATE FUNCTION supaworker_private.claim_jobs(" in line for line in migrated)
    assert any(line.startswith("rls: ('processing_queue', True") for line in migrated)
    # Nothing of supaworker is published (0022, 0023, 0026): Realtime would decode its changes
    # and send DELETE ids to every postgres_changes subscriber.
    assert not [line for line in migrated if line.startswith("publication:")]
    if migrated != defined:
        pytest.fail(
            f"{SOURCES.definitions.relative_to(ROOT)} and {SOURCES.migrations.relative_to(ROOT)}"
            " disagree (edit the definition and write a migration so they match):\n"
            + diff(migrated, defined),
            pytrace=False,
        )
    assert cron_schedules(definitions) == cron_schedules(migrations) != []
