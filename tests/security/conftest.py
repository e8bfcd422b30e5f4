"""Fixtures of the security tests: raw PostgREST calls that keep the HTTP status."""

from __future__ import annotations

from tests.postgrest_api import api  # noqa: F401 - fixture re-export
