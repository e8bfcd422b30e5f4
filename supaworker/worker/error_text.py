"""What a failed attempt says, and to whom (issue 19).

A job's `error_message` is read by the document's owner (RLS, Realtime); it used to be the
raw exception text, so a handler's `ConnectionError("postgres://app:hunter2@db...")` or an
AWS key in a message reached the user verbatim. Now an attempt has two texts:

- the owner's (`user_message`): the message of a `UserFacingError` (PermanentError and
  HandlerFailed are ones) or of any exception with a `user_message` string attribute; else
  the exception's class name alone. The worker's own failures (timeouts, a result too large)
  are written for users already and keep their text.
- the operators' (`describe`): class, message and the innermost frames, stored in
  `job_error_details` (service_role and queue admins only) and written to the worker's log.

Both are redacted (`supaworker.logs.redact`) and cut to MAX_ERROR_CHARS.
"""

from __future__ import annotations

import traceback

from supaworker.exceptions import UserFacingError


def user_message(exc: BaseException) -> str:
    """What the job's owner may read about this failure."""
    given = getattr(exc, "user_message", None)
    if isinstance(given, str) and given:
        return given
    if isinstance(exc, UserFacingError):
        return str(exc) or type(exc).__name__
    return type(exc).__name__


def describe(exc: BaseException) -> str:
    """`Type: message` plus the innermost frames: what operators read."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames)
    text = f"{type(exc).__name__}: {exc}"
    return f"{text} [{where}]" if where else text


class ReportedFailure(Exception):
    """A failure described where it happened (a handler's child process): both texts as
    they came, and whether it may be retried."""

    def __init__(self, user: str, detail: str, *, permanent: bool) -> None:
        super().__init__(detail)
        self.user_message = user
        self.detail = detail
        self.permanent = permanent
