"""Every error supaworker raises, under one root.

    SupaworkerError
    ├── ConfigurationError        settings missing or invalid (exit code 2 in the CLI)
    │   ├── HandlerImportError    `--handler MODULE:FUNCTION` cannot be imported
    │   └── SchemaOutdated        the database's supaworker schema is older than the package's
    ├── QueueError                a call to the queue did not succeed
    │   ├── TransportError        no usable answer: the outcome may be unknown
    │   │   ├── ConnectionFailed  the request never reached the server (safe to retry)
    │   │   ├── RequestTimeout    sent, no answer in time (outcome unknown)
    │   │   └── ServerError       HTTP 5xx / 503 / 504 from the gateway, PostgREST or Postgres
    │   ├── MalformedResponse     an answer that is not what the function returns
    │   └── RpcError              the database refused the call (SQLSTATE, message, hint)
    │       ├── InvalidArgument   22023 / HTTP 400
    │       ├── PermissionDenied  42501, PT403, PGRST301 / HTTP 401, 403
    │       ├── NotFound          PT404 / HTTP 404
    │       ├── Conflict          PT409 / HTTP 409
    │       └── PayloadTooLarge   PT413 / HTTP 413
    ├── HandlerFailed             an external handler (--handler-command, --handler-url)
    │   │                         failed the attempt; its message is stored as it is
    │   └── PermanentHandlerFailed   ... and said not to retry (also a PermanentError)
    └── PermanentError            raised by a handler: fail the job now, no retry

The local stack's errors (`supaworker_local.errors`) are not part of this tree.
Lower-level errors (httpx, postgrest) are translated where they cross into
supaworker, with `raise ... from exc`, so callers only ever catch these.
"""

from __future__ import annotations


class SupaworkerError(Exception):
    """A supaworker error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(SupaworkerError):
    """The configuration is missing or invalid."""


class HandlerImportError(ConfigurationError):
    """The handler could not be imported."""


class SchemaOutdated(ConfigurationError):
    """The database's supaworker schema is older than this package needs."""


class QueueError(SupaworkerError):
    """A call to the queue failed."""


class TransportError(QueueError):
    """The queue could not be reached or did not answer."""


class ConnectionFailed(TransportError):
    """Could not connect to the Supabase API (nothing was sent)."""


class RequestTimeout(TransportError):
    """The Supabase API did not answer in time; the call's outcome is unknown."""


class ServerError(TransportError):
    """The Supabase API answered with a server error."""

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MalformedResponse(QueueError):
    """The Supabase API answered with something that is not the function's result."""


class RpcError(QueueError):
    """The database refused the call."""

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        hint: str | None = None,
        details: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.hint = hint
        self.details = details
        self.status = status

    def __str__(self) -> str:
        text = super().__str__()
        if self.hint:
            text = f"{text} (hint: {self.hint})"
        return text


class InvalidArgument(RpcError):
    """An argument was invalid."""


class PermissionDenied(RpcError):
    """The key or token may not do this."""


class NotFound(RpcError):
    """No such document, job or worker."""


class Conflict(RpcError):
    """The operation does not apply in the job's current state."""


class PayloadTooLarge(RpcError):
    """The payload is larger than the queue accepts."""


class PermanentError(SupaworkerError):
    """The job cannot succeed; fail it without retrying."""


class HandlerFailed(SupaworkerError):
    """The handler failed the attempt."""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        # Seconds before the retry, when the handler said (an HTTP Retry-After); None: the
        # queue's exponential backoff.
        self.retry_after = retry_after


class PermanentHandlerFailed(HandlerFailed, PermanentError):
    """The handler failed the job and said not to retry it."""
