"""`supaworker init`: put (or bring up to date) supaworker's schema and edge functions in a
Supabase project. See `supaworker.project`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from supaworker import __version__, project
from supaworker.exceptions import ConfigurationError

EXIT_OUT_OF_DATE = 1


def init(
    project_dir: Annotated[
        Path, typer.Option(help="The project root, the folder holding supabase/")
    ] = Path("."),
    force: Annotated[
        bool, typer.Option(help="Replace edge function files that differ from supaworker's")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            help="Write nothing; exit 1 when the project lacks migrations or edge functions "
            "of this supaworker version (for CI)"
        ),
    ] = False,
) -> None:
    """Write supaworker's migrations and edge functions into the project's supabase/ folder.

    Only what the project lacks: running it again changes nothing, running it after upgrading
    supaworker adds the new migrations. Then: `supabase db push` and `supabase functions deploy`.
    """
    try:
        found = project.find_project(project_dir)
        report = project.init(found, force=force, check=check)
    except ConfigurationError as exc:
        typer.echo(f"supaworker: error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in report.skipped:
        typer.echo(
            f"skipped {found.relative(path)} (differs from supaworker's; --force replaces it)"
        )
    if check:
        for migration in report.missing_migrations:
            typer.echo(f"missing migration {migration.project_suffix}")
        for relative in report.missing_functions:
            typer.echo(f"missing or outdated supabase/functions/{relative}")
        if not report.up_to_date:
            typer.echo(f"out of date with supaworker {__version__}: run `supaworker init`")
            raise typer.Exit(EXIT_OUT_OF_DATE)
        typer.echo(f"up to date with supaworker {__version__}")
        return
    for path in report.written:
        typer.echo(f"added {found.relative(path)}")
    for path in report.updated:
        typer.echo(f"updated {found.relative(path)}")
    if not report.written and not report.updated:
        typer.echo(f"nothing to do: the project is up to date with supaworker {__version__}")
        return
    typer.echo("next: supabase db push, then supabase functions deploy")
