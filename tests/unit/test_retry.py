"""supaworker/worker/retry.py: the one retry policy of final writes."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from postgrest.exceptions import APIError

from supaworker.exceptions import (
    ConnectionFailed,
    InvalidArgument,
    NotFound,
    RequestTimeout,
    RpcError,
    ServerError,
)
from supaworker.transport import translate_api_error
from supaworker.worker import retry
from supaworker.worker.retry import RetryPolicy, is_missing_function


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.001)
    monkeypatch.setattr(retry, "MAX_DELAY", 0.002)


def failing(errors: list[Exception]) -> tuple[Callable[[], object], list[int]]:
    calls = [0]

    async def call() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return "landed"

    return call, calls


@pytest.mark.parametrize(
    "error",
    [
        ServerError("502", status=502),
        RpcError("could not serialize access", code="40001"),
        RpcError("deadlock detected", code="40P01"),
    ],
)
async def test_transient_faults_and_conflicts_are_retried(error: Exception) -> None:
    call, calls = failing([error, error])
    assert await RetryPolicy("w1")("complete_job", call) == "landed"  # type: ignore[arg-type]
    assert calls == [3]


@pytest.mark.parametrize(
    "error", [InvalidArgument("bad", code="22023"), NotFound("gone", code="PT404")]
)
async def test_other_refusals_are_not_retried(error: Exception) -> None:
    call, calls = failing([error])
    assert await RetryPolicy("w1")("fail_job", call) is None  # type: ignore[arg-type]
    assert calls == [1]


async def test_conflicts_are_retried_a_bounded_number_of_times() -> None:
    conflict = RpcError("could not serialize access", code="40001")
    call, calls = failing([conflict] * 100)
    assert await RetryPolicy("w1")("complete_job", call) is None  # type: ignore[arg-type]
    assert calls == [retry.MAX_CONFLICT_RETRIES + 1]


async def test_a_stopping_worker_gives_up_after_its_grace() -> None:
    policy = RetryPolicy("w1")
    policy.give_up_after(0.05)
    call, calls = failing([ServerError("503")] * 10_000)
    began = time.monotonic()
    assert await policy("complete_job", call) is None  # type: ignore[arg-type]
    assert time.monotonic() - began < 1 and calls[0] > 1


async def test_a_forced_stop_gives_up_at_the_next_fault() -> None:
    policy = RetryPolicy("w1")
    policy.force()
    call, calls = failing([ServerError("503")] * 5)
    assert await policy("release_jobs", call) is None  # type: ignore[arg-type]
    assert calls == [1]


def test_only_pgrst202_is_a_missing_function() -> None:
    assert is_missing_function(NotFound("no function", code="PGRST202"))
    assert not is_missing_function(NotFound("no job", code="PT404"))
    assert not is_missing_function(RpcError("could not serialize", code="40001"))
    assert not is_missing_function(ServerError("503"))


def _pool_timeout() -> Exception:
    """What a saturated PostgREST pool answers (HTTP 504), as the transport translates it."""
    body = {"code": "PGRST003", "message": "Timed out acquiring connection from connection pool."}
    return translate_api_error("complete_job", APIError(body), status=504)


@pytest.mark.parametrize(
    "make_error",
    [
        _pool_timeout,
        lambda: ServerError("502 Bad Gateway", status=502),
        lambda: ServerError("503 Service Unavailable", status=503),
        lambda: ConnectionFailed("connection refused"),
        lambda: RequestTimeout("no answer"),
    ],
    ids=["504-PGRST003", "502", "503", "connection-refused", "timeout"],
)
async def test_final_writes_outlast_a_long_saturation(make_error: Callable[[], Exception]) -> None:
    """Issue 19 item 5: users' reads can hold PostgREST's pool for minutes, refusing every
    request; a final write keeps trying (here 300 refusals) until it lands, never dropping
    the outcome of a job that ran (only a stopping worker's grace ends it)."""
    error = make_error()
    assert isinstance(error, ServerError | ConnectionFailed | RequestTimeout)
    call, calls = failing([error] * 300)
    assert await RetryPolicy("w1")("complete_job", call) == "landed"  # type: ignore[arg-type]
    assert calls == [301]
