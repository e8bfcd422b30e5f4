"""supaworker's SQL schema as the package carries it: the migrations, their order, the
version the database reports, and the version this package needs.

The migrations in `supaworker/sql/migrations/NNNN_<name>.sql` are the source of truth;
`supaworker init` copies the ones a project lacks into its `supabase/migrations/`. NNNN is
supaworker's own sequence, independent of the project's timestamps. The newest migration sets
`public.supaworker_schema_version()` to its own number, which `supaworker run` and the
operator commands compare with REQUIRED_VERSION before doing anything.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from supaworker import __version__
from supaworker.exceptions import SchemaOutdated

# The oldest schema this package works with. Raised only when the package calls something a
# newer migration adds; a database newer than this is accepted (docs/upgrading.md).
REQUIRED_VERSION = 23
# The SQL function the version is read from (migration 0012). 13: fail_job takes
# p_retry_after_seconds (migration 0013), which --handler-url sends. 19: the flow control of
# issue 18 (migrations 0014-0019): enqueue_jobs (enqueue_many), snooze_job (a handler's
# Snooze), the keys of enqueue_job.
# 20 (job_error_details, fail_job's p_error_detail) is not required: on a database without it
# the worker sends fail_job again without the detail (AsyncQueueClient.fail).
# 23: workers wake on their own private Broadcast topic worker:<id> (migration 0022: a
# database without it sends them nothing, so they would only poll) and owners follow
# jobs:<user_id> (0023). 21 (the pool-aware rescue) asks nothing of workers.
VERSION_FUNCTION = "supaworker_schema_version"
# A database without that function predates the migration that added it.
VERSION_MIGRATION = 12

MIGRATIONS_PACKAGE = "supaworker.sql.migrations"
EDGE_FUNCTIONS_PACKAGE = "supaworker.supabase_functions"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        """`0003_queue_functions.sql`: its name in the package."""
        return f"{self.number:04d}_{self.name}.sql"

    @property
    def project_suffix(self) -> str:
        """`supaworker_0003_queue_functions.sql`: its name in a project, after the timestamp."""
        return f"supaworker_{self.filename}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def require_version(database: int | None) -> None:
    """Refuse a database whose schema is older than this package needs; a newer one is fine
    (migrations never break the previous version's workers: docs/upgrading.md)."""
    if database is not None and database >= REQUIRED_VERSION:
        return
    has = (
        f"schema version {database}"
        if database is not None
        else f"a schema older than version {VERSION_MIGRATION} (no {VERSION_FUNCTION}())"
    )
    raise SchemaOutdated(
        f"the database has supaworker {has}; supaworker {__version__} needs version "
        f"{REQUIRED_VERSION} or newer: run `supaworker init` and `supabase db push`"
    )


def migrations_dir() -> Traversable:
    """The one place the migrations live (tests that build a database from them use it)."""
    return resources.files(MIGRATIONS_PACKAGE)


def edge_functions_dir() -> Traversable:
    return resources.files(EDGE_FUNCTIONS_PACKAGE)


@cache
def migrations() -> tuple[Migration, ...]:
    """Every packaged migration, in supaworker's order."""
    found = []
    for entry in migrations_dir().iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.number)
    numbers = [m.number for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"supaworker's migrations are not numbered 1..n: {numbers}")
    return tuple(found)


def latest_version() -> int:
    """The number of the newest packaged migration (what a fully migrated database reports)."""
    return migrations()[-1].number


# -- what the migrations create ------------------------------------------------------------
# Enough of SQL to name the tables, views, types and functions a migration creates, so that
# `supaworker init` can tell when a project already has its own object of the same name.
_CREATED = re.compile(
    r"^\s*create\s+(?:or\s+replace\s+)?"
    r"(?P<kind>table|view|materialized\s+view|type|function|procedure)\s+"
    r"(?:if\s+not\s+exists\s+)?(?P<name>(?:\"?\w+\"?\.)?\"?\w+\"?)",
    re.IGNORECASE | re.MULTILINE,
)
_COMMENT = re.compile(r"--[^\n]*")


@dataclass(frozen=True, order=True)
class SqlObject:
    kind: str  # "table" (also views and types: one namespace in pg_class/pg_type) or "function"
    name: str  # schema-qualified, lower case: "public.processing_queue"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


def created_objects(sql: str) -> set[SqlObject]:
    """The objects `sql` creates (`create table|view|type|function ...`), comments ignored."""
    objects = set()
    for match in _CREATED.finditer(_COMMENT.sub("", sql)):
        kind = "function" if match["kind"].lower() in ("function", "procedure") else "table"
        name = match["name"].replace('"', "").lower()
        if "." not in name:
            name = f"public.{name}"
        objects.add(SqlObject(kind, name))
    return objects


def supaworker_objects(selected: tuple[Migration, ...] | None = None) -> set[SqlObject]:
    """What supaworker's migrations create, except the `user_documents` table: a project's
    own table of that name is expected and kept (migration 0001 creates it only if absent)."""
    objects: set[SqlObject] = set()
    for migration in migrations() if selected is None else selected:
        objects |= created_objects(migration.sql)
    return {o for o in objects if o.name != "public.user_documents"}
