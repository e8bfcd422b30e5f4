"""`python -m supaworker` runs the CLI."""

from __future__ import annotations

from supaworker.cli.main import main

main()
