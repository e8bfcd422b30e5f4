"""Entry point of the `supaworker` command."""

from __future__ import annotations

import typer

from supaworker.cli import dev

app = typer.Typer(
    help="supaworker: a Supabase-native job queue for document processing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
