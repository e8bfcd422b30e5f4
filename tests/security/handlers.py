"""Handlers for the security tests (`supaworker run --handler tests.security.handlers:...`)."""

from __future__ import annotations

import os

from supaworker import Job, JobContext
from supaworker_local import keys

# What a Supabase Storage signed URL carries: a JWT in its query string. httpx puts the URL
# of a failed request into its exception message, so handlers raise such text in practice.
SIGNED_URL_TOKEN = keys.mint("storage-signing-secret-at-least-32-chars", "authenticated", ttl=60)


# Two more shapes seen in handlers' errors (issue 19): a database URL with its password, an
# AWS access key id.
DSN_PASSWORD = "hunter2-db-pass"
DSN = f"postgres://app:{DSN_PASSWORD}@db.internal:5432/main"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


async def leak_secrets(job: Job, ctx: JobContext) -> None:
    """Fails with an error that quotes a signed URL and the worker's own service key."""
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY", "")
    raise RuntimeError(
        "Client error '400 Bad Request' for url 'https://project.supabase.co/storage/v1/object/"
        f"sign/docs/{job.user_document_id}.pdf?token={SIGNED_URL_TOKEN}' (client key {key}, "
        f"fallback {DSN}, {AWS_KEY_ID})"
    )
