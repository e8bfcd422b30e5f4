"""Print a pip constraints file pinning each runtime dependency (core and `[local]`) to the
lowest version its range in pyproject.toml allows, so CI can prove the ranges are honest."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
requirements = [*project["dependencies"], *project["optional-dependencies"]["local"]]
for requirement in requirements:
    match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*.*>=\s*([0-9][^,;\s]*)", requirement)
    if match is None:
        sys.exit(f"no lower bound in {requirement!r}: every runtime dependency needs one")
    print(f"{match.group(1)}=={match.group(3)}")
