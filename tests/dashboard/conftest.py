"""Helpers of the dashboard tests: raw PostgREST calls through the gateway that keep the HTTP
status, so each test can check exactly what anon, a user, a queue admin and service_role get."""

from __future__ import annotations

from tests.postgrest_api import Api, Reply, api  # noqa: F401 - fixture re-export
