"""`supaworker dev ...`: the local Supabase-compatible stack."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from supaworker_local import stack
from supaworker_local.config import StackConfig, default_state_dir, parse_limits
from supaworker_local.errors import LocalStackError

app = typer.Typer(
    help="Run a local Supabase-compatible stack (PostgreSQL, PostgREST, gateway).",
    no_args_is_help=True,
)
console = Console()

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="SUPAWORKER_STATE_DIR",
        # Typer names the variable itself ([env var: ...]): not repeated here.
        help="Where the stack keeps its data and pid files (default: .supaworker/ in the "
        "project root)",
    ),
]


DbPort = Annotated[int | None, typer.Option(help="PostgreSQL port (default 54322)")]
ApiPort = Annotated[int | None, typer.Option(help="API gateway port (default 54321)")]
PostgrestPort = Annotated[int | None, typer.Option(help="PostgREST port (default 54330)")]


def ports_given(
    db_port: int | None, api_port: int | None, postgrest_port: int | None
) -> dict[str, Any]:
    ports = {
        name: value
        for name, value in (
            ("db_port", db_port),
            ("api_port", api_port),
            ("postgrest_port", postgrest_port),
        )
        if value is not None
    }
    if postgrest_port is not None:
        ports["postgrest_admin_port"] = postgrest_port + 1
    return ports


def starting(call: Callable[[], StackConfig]) -> StackConfig:
    """Bring the stack up; a missing tool or a failed step is a message and exit 2, not a
    traceback."""
    try:
        with console.status("Starting the local stack..."):
            return call()
    except LocalStackError as exc:
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(2) from None


def _dir(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).resolve()


def _config(state_dir: Path | None) -> StackConfig:
    directory = _dir(state_dir)
    if not (directory / "stack.json").exists():
        console.print(f"[red]No local stack under {directory}. Run: supaworker dev up[/red]")
        raise typer.Exit(1)
    return StackConfig.load(directory)


@app.command()
def up(
    state_dir: StateDir = None,
    reset: Annotated[bool, typer.Option(help="Wipe all local data and rebuild")] = False,
    db_port: DbPort = None,
    api_port: ApiPort = None,
    postgrest_port: PostgrestPort = None,
    realtime_plan: Annotated[
        str | None,
        typer.Option(
            help="Realtime quotas to enforce: free, pro (default), team or off "
            "[env: SUPAWORKER_REALTIME_PLAN]"
        ),
    ] = None,
    realtime_limit: Annotated[
        list[str] | None,
        typer.Option(
            help="Override one quota, e.g. max_events_per_second=50 (repeatable; 0 = unlimited) "
            "[env: SUPAWORKER_REALTIME_LIMITS=a=1,b=2]"
        ),
    ] = None,
    realtime_idle_multiplier: Annotated[
        int | None,
        typer.Option(
            help="Wait N x 100 ms after an empty poll (1, hosted's cadence, by default) "
            "[env: SUPAWORKER_REALTIME_IDLE_MULTIPLIER]"
        ),
    ] = None,
) -> None:
    """Start the stack (idempotent) and push the project's supabase/migrations with the
    Supabase CLI (`supabase db push`); serve its supabase/functions."""
    realtime: dict[str, object] = {}
    if realtime_plan is not None:
        realtime["realtime_plan"] = realtime_plan.strip().lower()
    if realtime_limit:
        try:
            realtime["realtime_limits"] = parse_limits(",".join(realtime_limit))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--realtime-limit") from exc
    if realtime_idle_multiplier is not None:
        realtime["realtime_idle_multiplier"] = realtime_idle_multiplier
    ports = ports_given(db_port, api_port, postgrest_port)
    try:
        config = starting(
            lambda: stack.up(_dir(state_dir), reset=reset, realtime=realtime, **ports)
        )
    except ValueError as exc:  # an unknown plan or limit name
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    _print_status(config)
    console.print('\nConfigure a shell with: [bold]eval "$(supaworker dev env)"[/bold]')


@app.command()
def down(
    state_dir: StateDir = None,
    reset: Annotated[bool, typer.Option(help="Also delete all local data")] = False,
) -> None:
    """Stop every process the stack started (data kept unless --reset)."""
    stopped = stack.down(_dir(state_dir), reset=reset)
    console.print("Stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
def status(
    state_dir: StateDir = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """What runs, on which port, healthy or not (exit 1 unless all of it is healthy)."""
    config = _config(state_dir)
    states = stack.status(config)
    if as_json:
        typer.echo(json.dumps([vars(s) for s in states]))
    else:
        _print_status(config)
    if not all(s.healthy for s in states):
        raise typer.Exit(1)


def _print_status(config: StackConfig) -> None:
    table = Table("service", "port", "running", "healthy", "pid")
    for s in stack.status(config):
        table.add_row(
            s.name,
            str(s.port),
            "yes" if s.running else "no",
            "[green]yes[/green]" if s.healthy else "[red]no[/red]",
            str(s.pid or ""),
        )
    console.print(table)
    console.print(f"API: {config.api_url}   DB: {config.db_url}")


@app.command()
def env(
    state_dir: StateDir = None,
    db_port: DbPort = None,
    api_port: ApiPort = None,
    postgrest_port: PostgrestPort = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print `export` lines for SUPABASE_URL, the keys, SUPABASE_DB_URL and the JWT secret
    (the port options as given to `dev up`, when it was started with other ports)."""
    config = _config(state_dir)
    for port_name, port in ports_given(db_port, api_port, postgrest_port).items():
        setattr(config, port_name, port)
    variables = stack.env_vars(config)
    if as_json:
        typer.echo(json.dumps(variables, indent=2))
        return
    for name, value in variables.items():
        typer.echo(f"export {name}='{value}'")


@app.command()
def user(
    email: str,
    state_dir: StateDir = None,
    admin: Annotated[bool, typer.Option(help="Mark the user a queue admin (app_metadata)")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create (or find) a user and print an access token for it on the last line."""
    user_id, token = stack.create_user(_config(state_dir), email, admin=admin)
    if as_json:
        typer.echo(json.dumps({"id": str(user_id), "email": email, "access_token": token}))
        return
    typer.echo(f"user {email} id {user_id}")
    typer.echo(token)
