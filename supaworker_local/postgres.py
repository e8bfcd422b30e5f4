"""A private PostgreSQL 15 cluster, bootstrapped like a Supabase project's database."""

from __future__ import annotations

import hashlib
import os
import subprocess
from importlib import resources
from pathlib import Path

import psycopg

from supaworker_local import tools
from supaworker_local.config import LOCAL_AUTHENTICATOR_PASSWORD, LOCAL_DB_PASSWORD, StackConfig
from supaworker_local.errors import LocalStackError, ToolMissingError


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def data_dir(config: StackConfig) -> Path:
    return config.pg_path / "pgdata"


def choose_pg_dir(state_dir: Path) -> str:
    """The state folder if the `postgres` OS user can reach it, else a private folder in /var/tmp.

    Only matters when running as root (initdb and the server run as `postgres`): a checkout
    under a home folder with mode 700 is not reachable by it.
    """
    if os.geteuid() != 0:
        return ""
    state_dir.mkdir(parents=True, exist_ok=True)
    reachable = (
        subprocess.run(
            ["runuser", "-u", "postgres", "--", "test", "-x", str(state_dir)],
            check=False,
            capture_output=True,
        ).returncode
        == 0
    )
    if reachable:
        return ""
    digest = hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]
    return f"/var/tmp/supaworker-{digest}"


def is_initialised(config: StackConfig) -> bool:
    return (data_dir(config) / "PG_VERSION").exists()


def is_running(config: StackConfig) -> bool:
    result = subprocess.run(
        [tools.pg_bin("pg_isready"), "-q", "-h", config.socket_dir, "-p", str(config.db_port)],
        check=False,
    )
    return result.returncode == 0


def _log_dir(config: StackConfig) -> Path:
    return config.pg_path / "log"


def _prepare_dirs(config: StackConfig) -> None:
    for path in (config.path, data_dir(config), Path(config.socket_dir), _log_dir(config)):
        path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in (data_dir(config), Path(config.socket_dir), _log_dir(config)):
            subprocess.run(["chown", "-R", "postgres:postgres", str(path)], check=True)
        data_dir(config).chmod(0o700)


def initialise(config: StackConfig) -> None:
    _prepare_dirs(config)
    result = subprocess.run(
        _as_postgres_user(
            [
                tools.pg_bin("initdb"),
                "-D",
                str(data_dir(config)),
                "-U",
                "supabase_admin",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ]
        ),
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LocalStackError(f"initdb failed for {data_dir(config)}:\n{result.stderr.strip()}")


def _supports_setting(name: str) -> bool:
    described = subprocess.run(
        [tools.pg_bin("postgres"), "--describe-config"], capture_output=True, text=True, check=False
    ).stdout
    return any(line.split("\t", 1)[0] == name for line in described.splitlines())


def _server_options(config: StackConfig) -> str:
    options = [
        f"-p {config.db_port}",
        f"-k {config.socket_dir}",
        f"-c listen_addresses={config.host}",
        "-c wal_level=logical",
        "-c max_replication_slots=20",
        "-c max_wal_senders=20",
        "-c max_connections=200",
        # A throwaway development cluster: durability is not what it tests. synchronous_commit
        # stays on: with it off, wal2json sees commits late and Realtime latency would lie.
        "-c fsync=off",
    ]
    if _supports_setting("output_plugin_libraries"):
        # Newer minor releases only let listed plugins decode WAL; Realtime decodes with wal2json.
        options.append("-c output_plugin_libraries=pgoutput,test_decoding,wal2json")
    if tools.pg_cron_installed():
        options += [
            "-c shared_preload_libraries=pg_cron",
            "-c cron.database_name=postgres",
            # pg_cron runs each job over libpq as the user who scheduled it (`postgres`, the
            # migration owner), by default to localhost over TCP, where this cluster asks for
            # a password that pg_cron does not have: every run was "connection failed". The
            # private socket is trusted (as for the superuser's own connections); background
            # workers would avoid libpq too, but take max_worker_processes slots that
            # parallel queries and logical decoding also need.
            f"-c cron.host={config.socket_dir}",
        ]
    return " ".join(options)


def start(config: StackConfig) -> None:
    if not tools.wal2json_installed():
        raise ToolMissingError(f"wal2json is not installed. Install it with: {tools.APT_HINT}")
    _prepare_dirs(config)
    log = _log_dir(config) / "postgres.log"
    result = subprocess.run(
        _as_postgres_user(
            [
                tools.pg_bin("pg_ctl"),
                "-D",
                str(data_dir(config)),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                _server_options(config),
                "start",
            ]
        ),
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        raise LocalStackError("PostgreSQL did not start:\n" + result.stderr + "\n".join(tail))


def stop(config: StackConfig, *, mode: str = "fast") -> bool:
    if not is_initialised(config) or not is_running(config):
        return False
    subprocess.run(
        _as_postgres_user(
            [tools.pg_bin("pg_ctl"), "-D", str(data_dir(config)), "-m", mode, "-w", "stop"]
        ),
        check=False,
        capture_output=True,
    )
    return True


def admin_connect(config: StackConfig) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(config.admin_db_url, autocommit=True)


def bootstrap(config: StackConfig) -> None:
    """Roles, auth schema, extensions, publication, grants: see sql/bootstrap.sql."""
    sql = resources.files("supaworker_local").joinpath("sql/bootstrap.sql").read_text()
    with admin_connect(config) as conn:
        conn.execute(sql)
        conn.execute(f"alter role postgres password '{LOCAL_DB_PASSWORD}'")
        conn.execute(f"alter role authenticator password '{LOCAL_AUTHENTICATOR_PASSWORD}'")


def repoint_cron_jobs(config: StackConfig) -> None:
    """cron.schedule() stores the host a job connects to (cron.host at that moment), so jobs
    scheduled by a cluster started before cron.host pointed at the socket still dial
    localhost and fail: point them at the socket too."""
    if not tools.pg_cron_installed():
        return
    with admin_connect(config) as conn:
        if conn.execute("select to_regclass('cron.job') is null").fetchone() == (True,):
            return
        conn.execute(
            "update cron.job set nodename = current_setting('cron.host')"
            " where nodename is distinct from current_setting('cron.host')"
        )


def applied_migrations(config: StackConfig) -> list[str]:
    with admin_connect(config) as conn:
        exists = conn.execute(
            "select to_regclass('supabase_migrations.schema_migrations') is not null"
        ).fetchone()
        if not exists or not exists[0]:
            return []
        rows = conn.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        ).fetchall()
    return [str(row[0]) for row in rows]
