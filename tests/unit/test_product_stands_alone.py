"""The product package imports nothing of the local stack, nor the `[local]` extra's
dependencies: a VPS installs `supaworker` without extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap

IMPORT_EVERYTHING = textwrap.dedent(
    """
    import sys, importlib, pkgutil
    for blocked in ("psycopg", "supaworker_local"):
        sys.modules[blocked] = None  # any import of these raises ImportError
    import supaworker
    names = [m.name for m in pkgutil.walk_packages(supaworker.__path__, "supaworker.")
             if m.name != "supaworker.__main__"]
    for name in names:
        importlib.import_module(name)
    from supaworker.cli.main import build_app
    build_app("run")
    print(len(names))
    """
)


def test_every_product_module_imports_without_the_local_stack() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 20  # the walk really found the package's modules
