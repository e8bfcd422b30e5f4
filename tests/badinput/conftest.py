"""Fixtures of the bad-input tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.state import Db, reaper_paused


@pytest.fixture(autouse=True)
def _reaper_paused(admin_db: Db) -> Iterator[None]:
    """These tests compare fingerprints of the whole queue (tests/security/state.py)."""
    with reaper_paused(admin_db):
        yield
