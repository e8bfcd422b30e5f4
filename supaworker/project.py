"""`supaworker init`: bring a Supabase project up to the installed supaworker.

Writes into `<project>/supabase/migrations/` every packaged migration the project does not
have yet, as `<timestamp>_supaworker_NNNN_<name>.sql` dated after the newest migration there
(the Supabase CLI refuses to push a migration older than the last one applied), and copies
the edge functions into `<project>/supabase/functions/`. Running it again changes nothing;
after a package upgrade it adds only what is new, which is the upgrade path.

A migration counts as present when a file carries its supaworker name (`_supaworker_0003_`)
or exactly its text (a copy made before `init` existed, under any name).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources.abc import Traversable
from pathlib import Path

from supaworker import __version__, schema
from supaworker.exceptions import ConfigurationError

_VERSION_PREFIX = re.compile(r"^(\d+)_")
_SUPAWORKER_FILE = re.compile(r"^\d+_supaworker_(\d{4})_")
_TIMESTAMP = "%Y%m%d%H%M%S"
# The edge functions' shared code lives under this name, so it never mixes with a project's
# own supabase/functions/_shared/ (a leading underscore: the CLI never deploys it as a function).
SHARED_DIR = "_supaworker"
# What init wrote, with each file's hash: an unedited file is updated by a later init, an
# edited one is left alone (without --force).
MANIFEST = f"{SHARED_DIR}/installed.json"


class ProjectError(ConfigurationError):
    """The project cannot take supaworker's schema as it is (one line says why)."""


@dataclass
class InitReport:
    written: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    # With check=True nothing is written: these are what a real run would write.
    missing_migrations: list[schema.Migration] = field(default_factory=list)
    missing_functions: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.missing_migrations and not self.missing_functions


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def supabase_dir(self) -> Path:
        return self.root / "supabase"

    @property
    def migrations_dir(self) -> Path:
        return self.supabase_dir / "migrations"

    @property
    def functions_dir(self) -> Path:
        return self.supabase_dir / "functions"

    def migration_files(self) -> list[Path]:
        if not self.migrations_dir.is_dir():
            return []
        return sorted(p for p in self.migrations_dir.glob("*.sql") if _VERSION_PREFIX.match(p.name))

    def relative(self, path: Path) -> Path:
        return path.relative_to(self.root)


def find_project(start: Path) -> Project:
    """The project whose `supabase/` folder is at `start` (not searched upward: init writes)."""
    root = start.resolve()
    if not (root / "supabase").is_dir():
        raise ProjectError(
            f"no supabase/ folder in {root}: run `supabase init` there first, or pass --project-dir"
        )
    return Project(root)


# -- migrations -------------------------------------------------------------------------------
def supaworker_number(path: Path, digests: dict[str, int]) -> int | None:
    """Which supaworker migration the file is, if it is one."""
    match = _SUPAWORKER_FILE.match(path.name)
    if match:
        return int(match[1])
    return digests.get(hashlib.sha256(path.read_bytes()).hexdigest())


def present_migrations(project: Project) -> dict[int, Path]:
    digests = {m.digest: m.number for m in schema.migrations()}
    present: dict[int, Path] = {}
    for path in project.migration_files():
        number = supaworker_number(path, digests)
        if number is not None:
            present[number] = path
    return present


def next_versions(newest: str | None, count: int, now: datetime) -> list[str]:
    """`count` migration versions, each after `newest` and after the one before it."""
    start = now.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    if newest is not None and int(newest) >= int(start.strftime(_TIMESTAMP)):
        try:
            start = datetime.strptime(newest, _TIMESTAMP) + timedelta(seconds=1)
        except ValueError:  # not a timestamp: the CLI only needs a larger number
            first = int(newest) + 1
            return [str(first + i).zfill(len(newest)) for i in range(count)]
    return [(start + timedelta(seconds=i)).strftime(_TIMESTAMP) for i in range(count)]


def check_conflicts(project: Project, missing: list[schema.Migration]) -> None:
    """Refuse, naming the object, when one of the project's own migrations creates a table or
    function that a missing supaworker migration creates too (the push would stop half way
    with 42P07 / 42723 and roll back)."""
    wanted = schema.supaworker_objects(tuple(missing))
    digests = {m.digest: m.number for m in schema.migrations()}
    for path in project.migration_files():
        if supaworker_number(path, digests) is not None:
            continue
        clash = sorted(wanted & schema.created_objects(path.read_text(errors="replace")))
        if clash:
            raise ProjectError(
                f"{project.relative(path)} already creates {clash[0]}, which supaworker creates"
                " too: rename or drop yours before `supaworker init`"
            )


# -- edge functions ---------------------------------------------------------------------------
# Files of the packaged functions' source folder that are not part of the functions: their
# tests, test helpers and docs (the wheel does not carry them either).
_NOT_SHIPPED = re.compile(r"(_test\.ts|/testing[a-z_]*\.ts|/assert\.ts|\.md|\.json|\.lock)$")


def packaged_function_files() -> dict[str, bytes]:
    """`{"enqueue-document/index.ts": b"..."}` for every file `init` copies."""
    files: dict[str, bytes] = {}

    def walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
        for entry in folder.iterdir():
            if entry.is_dir():
                yield from walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".ts"):
                yield f"{prefix}{entry.name}", entry

    for relative, entry in walk(schema.edge_functions_dir(), ""):
        if "/" in relative and not _NOT_SHIPPED.search("/" + relative):
            files[relative] = entry.read_bytes()
    return dict(sorted(files.items()))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(project: Project) -> dict[str, str]:
    path = project.functions_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _sync_functions(project: Project, report: InitReport, *, force: bool, check: bool) -> None:
    manifest = _read_manifest(project)
    recorded: dict[str, str] = {}
    for relative, data in packaged_function_files().items():
        target = project.functions_dir / relative
        current = target.read_bytes() if target.exists() else None
        if current == data:
            recorded[relative] = _sha(data)
            continue
        ours = current is not None and manifest.get(relative) == _sha(current)
        if current is not None and not (force or ours):
            report.skipped.append(target)  # the user's file, or one they edited
            if relative in manifest:
                recorded[relative] = manifest[relative]
            continue
        report.missing_functions.append(relative)
        if check:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        recorded[relative] = _sha(data)
        (report.updated if current is not None else report.written).append(target)
    if not check and recorded != manifest:
        path = project.functions_dir / MANIFEST
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"supaworker": __version__, "files": recorded}
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


# -- init -------------------------------------------------------------------------------------
def init(
    project: Project, *, force: bool = False, check: bool = False, now: datetime | None = None
) -> InitReport:
    """Write what the project lacks (nothing when `check`); see the module docstring."""
    report = InitReport()
    present = present_migrations(project)
    report.missing_migrations = [m for m in schema.migrations() if m.number not in present]
    if report.missing_migrations:
        check_conflicts(project, report.missing_migrations)
    if not check and report.missing_migrations:
        files = project.migration_files()
        newest = max((p.name.split("_", 1)[0] for p in files), default=None, key=int)
        versions = next_versions(newest, len(report.missing_migrations), now or datetime.now(UTC))
        project.migrations_dir.mkdir(parents=True, exist_ok=True)
        for version, migration in zip(versions, report.missing_migrations, strict=True):
            target = project.migrations_dir / f"{version}_{migration.project_suffix}"
            target.write_text(migration.sql, encoding="utf-8")
            report.written.append(target)
    _sync_functions(project, report, force=force, check=check)
    return report
