"""The in-memory model's checks of `enqueue_jobs` elements: `supaworker_private.bulk_problem`
in Python, the same order and messages (the contract suite compares them)."""

from __future__ import annotations

import json
import re
from typing import Any

from supaworker.models import COMPARISONS

KEYS = (
    "user_document_id",
    "priority",
    "payload",
    "queue",
    "max_attempts",
    "run_at",
    "timeout_seconds",
    "requires",
    "concurrency_key",
    "rate_limit_key",
)
SERVICE_ONLY = (
    "payload",
    "max_attempts",
    "run_at",
    "timeout_seconds",
    "requires",
    "concurrency_key",
    "rate_limit_key",
)
_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)
_INTEGER = re.compile(r"-?[0-9]{1,9}")
_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def jsonb_text(value: Any) -> str:
    """A JSON value as Postgres prints jsonb (", " and ": " between items)."""
    return json.dumps(value, ensure_ascii=False)


def _is_integer(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and _INTEGER.fullmatch(jsonb_text(value)) is not None
    )


def requires_problem(requires: dict[str, Any]) -> str | None:
    """supaworker_private.requires_problem: keys in order, the first malformed comparison."""
    for key, wanted in sorted(requires.items()):
        if not isinstance(wanted, dict) or not set(wanted) & COMPARISONS:
            continue
        if set(wanted) - COMPARISONS:
            return f"p_requires.{key} mixes comparisons (gte, lte, eq, in) with other keys"
        bounds = [wanted[op] for op in ("gte", "lte") if op in wanted]
        if any(not isinstance(b, int | float) or isinstance(b, bool) for b in bounds):
            return f"p_requires.{key}: gte and lte take a number"
        if "in" in wanted and (not isinstance(wanted["in"], list) or not wanted["in"]):
            return f"p_requires.{key}: in takes a non-empty array"
    return None


def bulk_problem(job: Any, max_payload_bytes: int) -> tuple[str, str] | None:
    """(SQLSTATE, message) of the first problem of one element, for the service role."""
    return _identity_problem(job) or _option_problem(job, max_payload_bytes)


def _identity_problem(job: Any) -> tuple[str, str] | None:
    if not isinstance(job, dict):
        return "22023", "must be a JSON object"
    unknown = sorted(k for k in job if k not in KEYS)
    if unknown:
        return "22023", f"unknown key {unknown[0]}"
    doc = job.get("user_document_id")
    if not isinstance(doc, str) or not _UUID.fullmatch(doc):
        return "22023", "user_document_id must be the id (a uuid) of a row of public.user_documents"
    priority = job.get("priority")
    if priority is not None and not _is_integer(priority):
        return "22023", f"priority must be an integer, got {jsonb_text(priority)}"
    if priority is not None and not -1000 <= priority <= 1000:
        return "22023", f"priority must be between -1000 and 1000, got {jsonb_text(priority)}"
    return None


def _option_problem(job: dict[str, Any], max_payload_bytes: int) -> tuple[str, str] | None:
    payload = job.get("payload")
    if payload is not None and not isinstance(payload, dict):
        return "22023", "payload must be a JSON object"
    size = len(jsonb_text(payload).encode()) if payload is not None else 0
    if size > max_payload_bytes:
        return (
            "PT413",
            f"payload is {size} bytes, more than max_payload_bytes ({max_payload_bytes})",
        )
    requires = job.get("requires")
    if requires is not None and not isinstance(requires, dict):
        return "22023", "requires must be a JSON object"
    if isinstance(requires, dict) and (problem := requires_problem(requires)):
        return "22023", problem
    queue = job.get("queue")
    if queue is not None and (not isinstance(queue, str) or not _QUEUE_NAME.fullmatch(queue)):
        return "22023", f"invalid queue name {jsonb_text(queue)}"
    attempts = job.get("max_attempts")
    if attempts is not None and (not _is_integer(attempts) or not 1 <= attempts <= 100):
        return "22023", f"max_attempts must be between 1 and 100, got {jsonb_text(attempts)}"
    timeout = job.get("timeout_seconds")
    if timeout is not None and (not _is_integer(timeout) or timeout <= 0):
        return "22023", f"timeout_seconds must be a positive integer, got {jsonb_text(timeout)}"
    run_at = job.get("run_at")
    if run_at is not None and not isinstance(run_at, str):
        return "22023", "run_at must be a timestamp (ISO 8601 text)"
    for key in ("concurrency_key", "rate_limit_key"):
        value = job.get(key)
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 200):
            return "22023", f"{key} must be a text of 1-200 characters"
    return None
