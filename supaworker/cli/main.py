"""Entry point of the `supaworker` command."""

from __future__ import annotations

import typer

from supaworker.cli import demo, dev, ops
from supaworker.cli import run as run_command

app = typer.Typer(
    help="supaworker: a Supabase-native job queue for document processing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command(epilog=run_command.EXIT_CODES_HELP)(run_command.run)
ops.register(app)
app.command()(demo.demo)
app.add_typer(dev.app, name="dev")


if __name__ == "__main__":
    app()
