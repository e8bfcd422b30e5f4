"""`--handler-url URL`: an existing HTTP processing service as the handler.

For each job the worker POSTs `{"job": {...the job row...}}` as JSON to URL, with
`Authorization: Bearer $SUPAWORKER_HANDLER_TOKEN` when that is set, and maps the answer:

    2xx                          completed; the JSON body is the result (empty body: null)
    408, 425, 429, 5xx           failed attempt, retried (`Retry-After` sets the delay)
    timeout, refused connection  failed attempt, retried with the queue's backoff
    any other 4xx                failed, not retried; the body's text is the job's error
    other statuses (3xx)         failed, not retried: redirects are not followed

This is the worker's second HTTP concern, separate from `supaworker/transport.py` (which talks
to Supabase): this one talks to the user's own service, with its own httpx client. The
request has no read timeout of its own: the job's timeout (`--job-timeout`,
`timeout_seconds`) bounds it, and cancels it like any handler.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self

import httpx

from supaworker.exceptions import ConfigurationError, HandlerFailed, PermanentHandlerFailed
from supaworker.models import Job
from supaworker.worker.handler import JobContext

log = logging.getLogger("supaworker.worker.url")

RETRYABLE_STATUSES = frozenset({408, 425, 429})
# How much of an error answer's body is kept in a retried attempt's message.
BODY_EXCERPT = 1000


class UrlHandler:
    def __init__(self, url: str, *, token: str | None = None, connect_timeout: float = 10.0):
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigurationError(
                f"--handler-url must be an http:// or https:// URL, got {url!r}"
            )
        self.url = url
        # What error messages (stored on the job, read by its owner) and logs show: no
        # user:password and no query string, which may carry credentials.
        self.shown = str(parsed.copy_with(userinfo=b"", query=None, fragment=None))
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = httpx.Timeout(None, connect=connect_timeout)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, job: Job, ctx: JobContext) -> Any:
        if self._client is None:
            raise RuntimeError("UrlHandler is used outside `async with`")
        try:
            response = await self._client.post(self.url, json={"job": job.model_dump(mode="json")})
        except httpx.TimeoutException as exc:
            raise HandlerFailed(f"POST {self.shown} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise HandlerFailed(
                f"POST {self.shown} failed: {type(exc).__name__}: {exc or 'no answer'}"
            ) from exc
        return _result_of(self.shown, response)


def _result_of(url: str, response: httpx.Response) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        if not response.content.strip():
            return None
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise PermanentHandlerFailed(
                f"POST {url} answered {status} with a body that is not JSON: "
                f"{response.text[:BODY_EXCERPT]!r}"
            ) from exc
    if status in RETRYABLE_STATUSES or 500 <= status < 600:
        raise HandlerFailed(
            f"POST {url} answered {status}: {response.text[:BODY_EXCERPT]}".rstrip(": "),
            retry_after=retry_after(response.headers.get("retry-after")),
        )
    if 400 <= status < 500:
        # The service's own words are the job's error (its owner reads them).
        raise PermanentHandlerFailed(response.text.strip() or f"POST {url} answered {status}")
    raise PermanentHandlerFailed(
        f"POST {url} answered {status} (redirects are not followed: give the final URL)"
    )


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date; None if absent or
    unreadable (then the queue's backoff applies)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        log.warning(
            "ignoring an unreadable Retry-After header: %r",
            value[:100],
            extra={"action": "retry_after_ignored"},
        )
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return float(max(math.ceil(seconds), 0))
