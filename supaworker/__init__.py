"""supaworker: a Supabase-native job queue for spreading document processing over servers.

App side:    `QueueClient` / `AsyncQueueClient` (enqueue, get, stats, retry, cancel).
Worker side: `supaworker run --handler myapp.processing:process_user_document`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from supaworker.client import AsyncQueueClient, QueueClient
from supaworker.exceptions import (
    ConfigurationError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PermanentError,
    PermissionDenied,
    QueueError,
    QuotaExceeded,
    RpcError,
    Snooze,
    SupaworkerError,
    TransportError,
    UserFacingError,
)
from supaworker.models import Job, JobEvent, JobStatus, QueueStats, WorkerInfo, WorkerStatus
from supaworker.worker.handler import JobContext

__all__ = [
    "AsyncQueueClient",
    "ConfigurationError",
    "Conflict",
    "Job",
    "JobContext",
    "JobEvent",
    "JobStatus",
    "NotFound",
    "PayloadTooLarge",
    "PermanentError",
    "PermissionDenied",
    "QueueClient",
    "QueueError",
    "QueueStats",
    "QuotaExceeded",
    "RpcError",
    "Snooze",
    "SupaworkerError",
    "TransportError",
    "UserFacingError",
    "WorkerInfo",
    "WorkerStatus",
    "__version__",
]
