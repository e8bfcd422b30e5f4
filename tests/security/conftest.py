"""Fixtures of the security tests: raw PostgREST calls that keep the HTTP status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgrest_api import api  # noqa: F401 - fixture re-export
from tests.security.state import Db, reaper_paused


@pytest.fixture(autouse=True)
def _reaper_paused(admin_db: Db) -> Iterator[None]:
    """These tests compare fingerprints of the whole queue (tests/security/state.py)."""
    with reaper_paused(admin_db):
        yield
