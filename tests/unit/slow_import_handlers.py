"""Handlers for the process executor's tests, in a module that takes a while to import (as a
handler importing torch or pandas does, more so on a loaded machine)."""

from __future__ import annotations

import os
import time
from typing import Any

from supaworker import Job

IMPORT_SECONDS = 1.5
time.sleep(IMPORT_SECONDS)


def quick(job: Job) -> dict[str, Any]:
    if job.payload.get("hang"):
        time.sleep(60)
    return {"pid": os.getpid()}
