"""Imported first by every bench script: makes the repository root importable, so that
`.venv/bin/python bench/<name>.py` can import `bench.*` and `supaworker.*`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
