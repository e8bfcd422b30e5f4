"""Entry point of the `supaworker` command.

The product's commands (`run`, the operator commands) are defined here. The local stack's
commands (`dev`, `demo`) belong to the `supaworker_local` package, which needs the `[local]`
extra: they are plugged in through the `supaworker.commands` entry points and imported only
when one of them is invoked, so a plain install never imports the dev stack.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import typer

from supaworker import __version__
from supaworker.cli import init as init_command
from supaworker.cli import ops
from supaworker.cli import run as run_command

PLUGIN_GROUP = "supaworker.commands"
# The commands the [local] extra provides; listed so that `--help` names them even when the
# extra's dependencies are missing.
LOCAL_COMMANDS = {
    "dev": "Run a local Supabase-compatible stack (needs supaworker[local]).",
    "demo": "The whole idea in one minute on the local stack (needs supaworker[local]).",
}
INSTALL_LOCAL = "pip install 'supaworker[local]'"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"supaworker {__version__}")
        raise typer.Exit()


def build_app(invoked: str | None = None) -> typer.Typer:
    """The `supaworker` command; `invoked` is the subcommand named on the command line."""
    app = typer.Typer(
        help="supaworker: a Supabase-native job queue for document processing.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _main(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit"
        ),
    ) -> None:
        """supaworker: a Supabase-native job queue for document processing."""

    app.command(epilog=run_command.EXIT_CODES_HELP)(run_command.run)
    app.command()(init_command.init)
    ops.register(app)
    for name in LOCAL_COMMANDS:
        if name == invoked:
            _plug_in(app, name)
        else:
            app.command(name, context_settings=_PASS_THROUGH, add_help_option=False)(
                _placeholder(name)
            )
    return app


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _missing(name: str, reason: str) -> Any:
    def command(ctx: typer.Context) -> None:
        typer.echo(
            f"supaworker: error: `supaworker {name}` needs the local stack, which is not "
            f"installed ({reason}): {INSTALL_LOCAL}",
            err=True,
        )
        raise typer.Exit(2)

    command.__doc__ = LOCAL_COMMANDS.get(name, "")
    return command


def _plug_in(app: typer.Typer, name: str) -> None:
    """Attach the plugin command `name` (only the one invoked: importing is not free)."""
    found = {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}
    entry = found.get(name)
    try:
        if entry is None:
            raise ModuleNotFoundError(f"no {PLUGIN_GROUP} entry point {name!r}")
        target = entry.load()
    except ModuleNotFoundError as exc:
        app.command(name, context_settings=_PASS_THROUGH, add_help_option=False)(
            _missing(name, f"missing module {exc.name}" if exc.name else str(exc))
        )
        return
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name)
    else:
        app.command(name)(target)


def _placeholder(name: str) -> Any:
    # Listed in `--help` without importing the plugin; never run (main() plugs the real one in).
    def command() -> None:
        raise AssertionError(f"{name} was not plugged in")  # pragma: no cover

    command.__doc__ = LOCAL_COMMANDS[name]
    return command


def main(argv: list[str] | None = None) -> None:
    """`supaworker ...`: plugs in the local-stack command named on the command line, if any."""
    args = sys.argv[1:] if argv is None else argv
    invoked = next((a for a in args if not a.startswith("-")), None)
    build_app(invoked)(args=args, prog_name="supaworker")


if __name__ == "__main__":
    main()
