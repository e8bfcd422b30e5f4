"""`supaworker dev up | down | status | env | user`: the local stack's life cycle.

`up` is idempotent: it starts what is not running and leaves what is. Order: PostgreSQL
(initialised and bootstrapped on first start) -> migrations with the real Supabase CLI ->
PostgREST 12 as `authenticator` -> the gateway.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from supaworker_local import keys, postgres, processes, tools
from supaworker_local.config import StackConfig, apply_realtime_env
from supaworker_local.errors import LocalStackError
from supaworker_local.realtime import limits


@dataclass
class ServiceState:
    name: str
    port: int
    running: bool
    healthy: bool
    pid: int | None = None


def _run_dir(config: StackConfig) -> Path:
    return config.path / "pids"


def _log_dir(config: StackConfig) -> Path:
    return config.path / "log"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return 200 <= int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


# -- configuration -------------------------------------------------------------------------
def _realtime_settings(config: StackConfig) -> tuple[object, ...]:
    return (
        config.realtime_plan,
        sorted(config.realtime_limits.items()),
        config.realtime_idle_multiplier,
        config.realtime_poll_interval_ms,
    )


def load_or_create_config(
    state_dir: Path, realtime: dict[str, object] | None = None, **overrides: int
) -> StackConfig:
    """stack.json (or defaults), then the given ports, SUPAWORKER_REALTIME_* and `realtime`
    (`realtime_plan`, `realtime_limits`, `realtime_idle_multiplier` from `dev up` options)."""
    if (state_dir / "stack.json").exists():
        config = StackConfig.load(state_dir)
    else:
        config = StackConfig(state_dir=str(state_dir))
    for name, value in overrides.items():
        setattr(config, name, value)
    apply_realtime_env(config)
    for name, setting in (realtime or {}).items():
        if name == "realtime_limits" and isinstance(setting, dict):
            config.realtime_limits = {**config.realtime_limits, **setting}
        else:
            setattr(config, name, setting)
    # Fail here, with the reason, rather than in the gateway's log.
    limits.resolve(config.realtime_plan, config.realtime_limits)
    if not (state_dir / "stack.json").exists() or not postgres.is_initialised(config):
        config.pg_dir = postgres.choose_pg_dir(state_dir)
    if not config.anon_key:
        config.anon_key = keys.anon_key(config.jwt_secret)
        config.service_role_key = keys.service_role_key(config.jwt_secret)
    config.save()
    return config


# -- the parts -----------------------------------------------------------------------------
def ensure_postgres(config: StackConfig) -> None:
    fresh = not postgres.is_initialised(config)
    if fresh:
        postgres.initialise(config)
    if not postgres.is_running(config):
        postgres.start(config)
    postgres.bootstrap(config)


def project_dir(config: StackConfig) -> Path:
    return Path(config.project_dir) if config.project_dir else tools.project_root()


def require_project(root: Path) -> None:
    if not (root / "supabase" / "migrations").is_dir():
        raise LocalStackError(
            f"No supabase/migrations folder under {root}: run `supaworker init` in your "
            "project (after `supabase init`), or `supaworker demo` for a throwaway one"
        )


def apply_migrations(config: StackConfig) -> str:
    """`supabase db push` against the local database: the same command as for a hosted one."""
    root = project_dir(config)
    require_project(root)
    result = subprocess.run(
        [
            tools.supabase_cli(),
            "db",
            "push",
            "--db-url",
            config.db_url,
            "--yes",
            "--workdir",
            str(root),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SUPABASE_TELEMETRY_DISABLED": "1", "DO_NOT_TRACK": "1"},
    )
    if result.returncode != 0:
        raise LocalStackError(f"supabase db push failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def postgrest_env(config: StackConfig) -> dict[str, str]:
    """PostgREST configured as the Supabase CLI configures it (start.go / postgrest.ts)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGRST_DB_URI": config.authenticator_db_url,
        "PGRST_DB_SCHEMAS": "public,graphql_public",
        "PGRST_DB_EXTRA_SEARCH_PATH": "public,extensions",
        "PGRST_DB_MAX_ROWS": "1000",
        "PGRST_DB_ANON_ROLE": "anon",
        "PGRST_JWT_SECRET": config.jwt_secret,
        "PGRST_SERVER_HOST": config.host,
        "PGRST_SERVER_PORT": str(config.postgrest_port),
        "PGRST_ADMIN_SERVER_PORT": str(config.postgrest_admin_port),
        "PGRST_DB_POOL": "10",
        "PGRST_LOG_LEVEL": "error",
    }


def start_postgrest(config: StackConfig) -> None:
    if processes.read_pid(_run_dir(config) / "postgrest.pid") is not None:
        return
    processes.spawn(
        "postgrest",
        [tools.postgrest()],
        run_dir=_run_dir(config),
        log_dir=_log_dir(config),
        env=postgrest_env(config),
    )
    processes.wait_until(
        lambda: _http_ok(f"http://{config.host}:{config.postgrest_admin_port}/ready"),
        "PostgREST",
        timeout=30,
        log=_log_dir(config) / "postgrest.log",
    )


def stop_postgrest(config: StackConfig) -> bool:
    return processes.stop("postgrest", _run_dir(config))


def start_gateway(config: StackConfig) -> None:
    if processes.read_pid(_run_dir(config) / "gateway.pid") is not None:
        return
    processes.spawn(
        "gateway",
        [sys.executable, "-m", "supaworker_local.gateway", "--state-dir", str(config.path)],
        run_dir=_run_dir(config),
        log_dir=_log_dir(config),
        env={**os.environ, "SUPAWORKER_PROJECT_DIR": str(project_dir(config))},
    )
    processes.wait_until(
        lambda: _http_ok(f"{config.api_url}/_stack/health"),
        "The API gateway",
        timeout=30,
        log=_log_dir(config) / "gateway.log",
    )


def stop_gateway(config: StackConfig) -> bool:
    return processes.stop("gateway", _run_dir(config))


def reload_postgrest_schema(config: StackConfig) -> None:
    with postgres.admin_connect(config) as conn:
        conn.execute("notify pgrst, 'reload schema'")


# -- life cycle ----------------------------------------------------------------------------
def up(
    state_dir: Path,
    *,
    reset: bool = False,
    project: Path | None = None,
    realtime: dict[str, object] | None = None,
    **ports: int,
) -> StackConfig:
    """`project`: the folder holding supabase/ (default: found from the working directory).
    `realtime`: Realtime settings from `dev up` options (see load_or_create_config)."""
    root = (project or tools.project_root()).resolve()
    require_project(root)  # before anything is started
    if reset:
        down(state_dir, reset=True)
    before = (
        _realtime_settings(StackConfig.load(state_dir))
        if (state_dir / "stack.json").exists()
        else None
    )
    config = load_or_create_config(state_dir, realtime, **ports)
    config.project_dir = str(root)
    config.save()
    if before is not None and before != _realtime_settings(config):
        stop_gateway(config)  # the gateway reads its Realtime settings once, at start
    ensure_postgres(config)
    apply_migrations(config)
    postgres.repoint_cron_jobs(config)
    start_postgrest(config)
    reload_postgrest_schema(config)
    start_gateway(config)
    return config


def down(state_dir: Path, *, reset: bool = False) -> list[str]:
    stopped: list[str] = []
    if (state_dir / "stack.json").exists():
        config = StackConfig.load(state_dir)
        for name in ("gateway", "postgrest"):
            if processes.stop(name, _run_dir(config)):
                stopped.append(name)
        if postgres.stop(config):
            stopped.append("postgres")
    if reset and state_dir.exists():
        pg_dir = StackConfig.load(state_dir).pg_dir if (state_dir / "stack.json").exists() else ""
        if pg_dir:
            shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(state_dir)
    return stopped


def status(config: StackConfig) -> list[ServiceState]:
    run_dir = _run_dir(config)
    pg_running = postgres.is_initialised(config) and postgres.is_running(config)
    rest_pid = processes.read_pid(run_dir / "postgrest.pid")
    gw_pid = processes.read_pid(run_dir / "gateway.pid")
    return [
        ServiceState("postgres", config.db_port, pg_running, pg_running),
        ServiceState(
            "postgrest",
            config.postgrest_port,
            rest_pid is not None,
            _http_ok(f"http://{config.host}:{config.postgrest_admin_port}/ready"),
            rest_pid,
        ),
        ServiceState(
            "gateway",
            config.api_port,
            gw_pid is not None,
            _http_ok(f"{config.api_url}/_stack/health"),
            gw_pid,
        ),
    ]


def env_vars(config: StackConfig) -> dict[str, str]:
    return {
        "SUPABASE_URL": config.api_url,
        "SUPABASE_ANON_KEY": config.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": config.service_role_key,
        "SUPABASE_PUBLISHABLE_KEY": config.publishable_key,
        "SUPABASE_SECRET_KEY": config.secret_key,
        "SUPABASE_DB_URL": config.db_url,
        "SUPABASE_JWT_SECRET": config.jwt_secret,
    }


def create_user(config: StackConfig, email: str, *, admin: bool = False) -> tuple[uuid.UUID, str]:
    """Find or create an `auth.users` row and mint an access token for it (GoTrue's stand-in)."""
    app_meta: dict[str, object] = {"provider": "email", "providers": ["email"]}
    if admin:
        app_meta["queue_admin"] = True
    with postgres.admin_connect(config) as conn:
        row = conn.execute(
            """
            insert into auth.users (id, aud, role, email, email_confirmed_at, confirmed_at,
                                    raw_app_meta_data)
            values (gen_random_uuid(), 'authenticated', 'authenticated', %s, now(), now(), %s)
            on conflict (email) do update
              set raw_app_meta_data = auth.users.raw_app_meta_data || excluded.raw_app_meta_data
            returning id, raw_app_meta_data
            """,
            (email, json.dumps(app_meta)),
        ).fetchone()
    assert row is not None
    user_id = uuid.UUID(str(row[0]))
    meta = row[1] if isinstance(row[1], dict) else app_meta
    token = keys.user_token(config.jwt_secret, user_id, email, app_metadata=meta)
    return user_id, token
