"""Where the local stack lives and how it is reached.

One `StackConfig` is written to `<state_dir>/stack.json` by `supaworker dev up`; every other
process of the stack (the gateway, tests, `dev env`) reads it back from there.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from supaworker_local.tools import project_root

# The Supabase CLI's published local defaults (cli pkg/config/apikeys.go): public test values,
# never used outside the local stack.
LOCAL_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
LOCAL_PUBLISHABLE_KEY = "sb_publishable_ACJWlzQHlZjBrEguHvfOxg_3BJgxAaH"
LOCAL_SECRET_KEY = "sb_secret_N7UND0UgjKTVK-Uodkm0Hg_xSvEMPvz"
LOCAL_DB_PASSWORD = "postgres"
LOCAL_AUTHENTICATOR_PASSWORD = "authenticator-local-password"


def default_state_dir() -> Path:
    """$SUPAWORKER_STATE_DIR, else `.supaworker/` in the project root (the folder holding
    `supabase/`, found from any of its subfolders), else in the working directory."""
    env = os.environ.get("SUPAWORKER_STATE_DIR")
    if env:
        return Path(env).resolve()
    return project_root() / ".supaworker"


@dataclass
class StackConfig:
    state_dir: str
    db_port: int = 54322
    api_port: int = 54321
    postgrest_port: int = 54330
    postgrest_admin_port: int = 54331
    host: str = "127.0.0.1"
    jwt_secret: str = LOCAL_JWT_SECRET
    publishable_key: str = LOCAL_PUBLISHABLE_KEY
    secret_key: str = LOCAL_SECRET_KEY
    # Realtime's own default poll interval for its wal2json slot (about 100 ms).
    realtime_poll_interval_ms: int = 100
    # Wait `interval x multiplier` after a poll that found the slot empty. Hosted Realtime waits
    # the plain interval (1); a larger value trades wake-up latency for idle CPU, locally only.
    realtime_idle_multiplier: int = 1
    # The plan whose Realtime quotas the local endpoint enforces: "free", "pro" or "off"
    # (supaworker_local/realtime/limits.py), and per-quota overrides by the names hosted
    # Realtime's tenant settings use (`max_events_per_second`, ...).
    realtime_plan: str = "pro"
    realtime_limits: dict[str, int] = field(default_factory=dict)
    # Legacy JWT keys, minted once by `dev up` and kept so every process agrees on them.
    anon_key: str = ""
    service_role_key: str = ""
    # Where PostgreSQL keeps its data and socket: the state folder, unless the `postgres`
    # OS user cannot reach it (a checkout under /root, say); see postgres.choose_pg_dir.
    pg_dir: str = ""
    # The project whose supabase/ (migrations, functions) the stack serves.
    project_dir: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return Path(self.state_dir)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def postgrest_url(self) -> str:
        return f"http://{self.host}:{self.postgrest_port}"

    @property
    def db_url(self) -> str:
        """What `SUPABASE_DB_URL` is on a project: the `postgres` migration owner."""
        return (
            f"postgresql://postgres:{LOCAL_DB_PASSWORD}@{self.host}:{self.db_port}/postgres"
            "?sslmode=disable"
        )

    @property
    def admin_db_url(self) -> str:
        """The cluster superuser over the private socket (what Realtime itself logs in as)."""
        return f"postgresql://supabase_admin@/postgres?host={self.socket_dir}&port={self.db_port}"

    @property
    def authenticator_db_url(self) -> str:
        return (
            f"postgresql://authenticator:{LOCAL_AUTHENTICATOR_PASSWORD}@{self.host}:"
            f"{self.db_port}/postgres"
        )

    @property
    def pg_path(self) -> Path:
        return Path(self.pg_dir) if self.pg_dir else self.path

    @property
    def socket_dir(self) -> str:
        return str(self.pg_path / "run")

    @property
    def config_file(self) -> Path:
        return self.path / "stack.json"

    # -- persistence ---------------------------------------------------------------------
    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path | None = None) -> StackConfig:
        directory = state_dir or default_state_dir()
        data = json.loads((directory / "stack.json").read_text())
        return cls(**data)


# -- Realtime settings from the environment -------------------------------------------------
ENV_REALTIME_PLAN = "SUPAWORKER_REALTIME_PLAN"
ENV_REALTIME_LIMITS = "SUPAWORKER_REALTIME_LIMITS"
ENV_REALTIME_IDLE_MULTIPLIER = "SUPAWORKER_REALTIME_IDLE_MULTIPLIER"


def parse_limits(text: str) -> dict[str, int]:
    """`max_events_per_second=50,max_concurrent_users=10` -> a dict (ValueError if malformed)."""
    limits: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=NUMBER, got {item!r}")
        limits[name.strip()] = int(value)
    return limits


def apply_realtime_env(config: StackConfig, environ: dict[str, str] | None = None) -> None:
    """What `supaworker dev up` takes from SUPAWORKER_REALTIME_* (unset ones change nothing)."""
    env = os.environ if environ is None else environ
    if plan := env.get(ENV_REALTIME_PLAN):
        config.realtime_plan = plan.strip().lower()
    if limits := env.get(ENV_REALTIME_LIMITS):
        config.realtime_limits = {**config.realtime_limits, **parse_limits(limits)}
    if multiplier := env.get(ENV_REALTIME_IDLE_MULTIPLIER):
        config.realtime_idle_multiplier = int(multiplier)
