"""The two backends of the contract suite and its RPC registry.

Every contract test runs twice: against `supaworker.testing.InMemoryTransport` and against the
real SQL functions through PostgREST. Each test names the RPCs it pins down with `@covers`;
`test_rpc_coverage.py` fails when a function of `supaworker.rpc` is named by no test, and the
fixture below fails a test that names an RPC it never called, so the registry cannot lie.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import psycopg
import pytest

from supaworker import rpc
from supaworker.client import AsyncQueueClient
from supaworker.testing import InMemoryTransport
from supaworker.transport import AsyncTransport
from tests.conftest import StackUser

F = TypeVar("F", bound=Callable[..., Any])


def rpc_functions() -> set[str]:
    """The SQL functions `supaworker.rpc` can call: its public functions returning RpcCall."""
    return {
        name
        for name, fn in vars(rpc).items()
        if inspect.isfunction(fn)
        and fn.__module__ == rpc.__name__
        and not name.startswith("_")
        and str(inspect.signature(fn).return_annotation).startswith("RpcCall")
    }


def covers(*functions: str) -> Callable[[F], F]:
    """Marks a contract test as pinning down these RPCs (by their SQL name)."""
    unknown = set(functions) - rpc_functions()
    if unknown:
        raise ValueError(f"not functions of supaworker.rpc: {sorted(unknown)}")

    def mark(test: F) -> F:
        test.__rpc_covers__ = frozenset(functions)  # type: ignore[attr-defined]
        return test

    return mark


@dataclass
class Recording:
    """A transport that remembers which functions it was asked to call."""

    inner: AsyncTransport
    called: set[str] = field(default_factory=set)

    async def call(self, function: str, params: Mapping[str, Any]) -> Any:
        self.called.add(function)
        return await self.inner.call(function, params)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Backend:
    queue: AsyncQueueClient
    new_document: Callable[[], uuid.UUID]  # all of one owner, as in SQL (one user per test)
    queue_name: str
    # Another owner: a function making documents that belong to a new user.
    new_owner: Callable[[], Callable[[], uuid.UUID]]
    # State a test cannot reach through the API (a dead worker, time passing), set directly.
    make_stale: Callable[[str], None]
    shift_back: Callable[[uuid.UUID, str, timedelta], None]
    set_last_rescue: Callable[[timedelta | None], None]  # how long ago; None: never
    # queue_settings.max_running_per_user / max_pending_per_user (None: off); reset after.
    set_limits: Callable[[int | None, int | None], None]
    # A row of concurrency_limits (key, max_running) / rate_limits (key, per_second, burst);
    # removed after the test.
    set_concurrency_limit: Callable[[str, int], None]
    set_rate_limit: Callable[[str, float, int], None]
    # job_error_details' text for (job, attempt), None when there is no row.
    error_detail: Callable[[uuid.UUID, int], str | None]

    async def raw(self, function: str, params: Mapping[str, Any]) -> Any:
        """A call that bypasses rpc.py: for arguments rpc.py would never send."""
        return await self.queue.transport.call(function, params)

    async def worker(
        self,
        worker_id: str | None = None,
        slots: int = 5,
        capabilities: dict[str, object] | None = None,
    ) -> str:
        wid = worker_id or f"c-{uuid.uuid4().hex[:8]}"
        await self.queue.register_worker(
            wid,
            worker_name=wid,
            max_concurrent_jobs=slots,
            capabilities=capabilities or {},
            queues=[self.queue_name],
            host="test",
            version="t",
        )
        return wid

    async def enqueue(self, **kw: object) -> uuid.UUID:
        job = await self.queue.enqueue(self.new_document(), queue=self.queue_name, **kw)  # type: ignore[arg-type]
        return job.id


_SHIFTABLE = ("run_at", "assigned_at", "started_at", "completed_at")


def _memory() -> tuple[InMemoryTransport, dict[str, Any]]:
    fake = InMemoryTransport()

    def make_stale(worker_id: str) -> None:
        fake.workers[worker_id]["last_heartbeat"] -= timedelta(hours=1)

    def shift_back(job_id: uuid.UUID, column: str, by: timedelta) -> None:
        assert column in _SHIFTABLE
        fake.jobs[job_id][column] -= by

    def set_last_rescue(ago: timedelta | None) -> None:
        fake.settings.last_rescue_at = None if ago is None else fake.clock() - ago

    def set_limits(running: int | None, pending: int | None) -> None:
        fake.settings.max_running_per_user = running
        fake.settings.max_pending_per_user = pending

    def set_concurrency_limit(key: str, max_running: int) -> None:
        fake.concurrency_limits[key] = max_running

    def set_rate_limit(key: str, per_second: float, burst: int) -> None:
        fake.rate_limits[key] = (per_second, burst)

    def error_detail(job_id: uuid.UUID, attempt: int) -> str | None:
        return fake.error_details.get((job_id, attempt))

    hooks = {
        "make_stale": make_stale,
        "shift_back": shift_back,
        "set_last_rescue": set_last_rescue,
        "set_limits": set_limits,
        "set_concurrency_limit": set_concurrency_limit,
        "set_rate_limit": set_rate_limit,
        "error_detail": error_detail,
    }
    return fake, hooks


def _sql(admin_db: psycopg.Connection[tuple[object, ...]]) -> dict[str, Any]:
    def make_stale(worker_id: str) -> None:
        admin_db.execute(
            "update public.vps_workers set last_heartbeat = last_heartbeat - interval '1 hour'"
            " where worker_id = %s",
            (worker_id,),
        )

    def shift_back(job_id: uuid.UUID, column: str, by: timedelta) -> None:
        assert column in _SHIFTABLE  # a fixed column name, never user input
        admin_db.execute(
            f"update public.processing_queue set {column} = {column} - %s where id = %s",
            (by, job_id),
        )

    def set_last_rescue(ago: timedelta | None) -> None:
        admin_db.execute(
            "update public.queue_settings set last_rescue_at = now() - %s::interval", (ago,)
        )

    def set_limits(running: int | None, pending: int | None) -> None:
        admin_db.execute(
            "update public.queue_settings set max_running_per_user = %s, max_pending_per_user = %s",
            (running, pending),
        )

    keys: list[str] = []  # the limit rows this test added, removed at its end

    def set_concurrency_limit(key: str, max_running: int) -> None:
        keys.append(key)
        admin_db.execute(
            "insert into public.concurrency_limits (key, max_running) values (%s, %s)",
            (key, max_running),
        )

    def set_rate_limit(key: str, per_second: float, burst: int) -> None:
        keys.append(key)
        admin_db.execute(
            "insert into public.rate_limits (key, per_second, burst) values (%s, %s, %s)",
            (key, per_second, burst),
        )

    def set_limits_and_forget_keys(running: int | None, pending: int | None) -> None:
        set_limits(running, pending)
        if running is None and pending is None and keys:  # the fixture's reset
            for table in ("public.concurrency_limits", "public.rate_limits"):
                admin_db.execute(f"delete from {table} where key = any(%s)", (keys,))
            keys.clear()

    def error_detail(job_id: uuid.UUID, attempt: int) -> str | None:
        row = admin_db.execute(
            "select detail from public.job_error_details where job_id = %s and attempt = %s",
            (job_id, attempt),
        ).fetchone()
        return None if row is None else str(row[0])

    return {
        "make_stale": make_stale,
        "shift_back": shift_back,
        "set_last_rescue": set_last_rescue,
        "set_limits": set_limits_and_forget_keys,
        "set_concurrency_limit": set_concurrency_limit,
        "set_rate_limit": set_rate_limit,
        "error_detail": error_detail,
    }


@pytest.fixture(params=["memory", "supabase"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        fake, hooks = _memory()
        recording = Recording(fake)

        def new_owner() -> Callable[[], uuid.UUID]:
            owner = uuid.uuid4()
            return lambda: fake.add_document(owner)

        new_document = new_owner()
    else:
        stack = request.getfixturevalue("stack")
        admin_db: psycopg.Connection[tuple[object, ...]] = request.getfixturevalue("admin_db")
        user: StackUser = request.getfixturevalue("make_user")()
        hooks = _sql(admin_db)
        real = await AsyncQueueClient.connect(stack.api_url, stack.service_role_key)
        recording = Recording(real.transport)

        def new_owner() -> Callable[[], uuid.UUID]:
            owner: StackUser = request.getfixturevalue("make_user")()
            return lambda: owner.create_document(admin_db)

        def new_document() -> uuid.UUID:
            return user.create_document(admin_db)

    backend = Backend(AsyncQueueClient(recording), new_document, name, new_owner, **hooks)
    try:
        yield backend
    finally:
        backend.set_limits(None, None)  # global in SQL: never leak into the next test
    await recording.aclose()
    claimed: frozenset[str] = getattr(request.function, "__rpc_covers__", frozenset())
    missing = claimed - recording.called
    assert not missing, f"@covers names {sorted(missing)}, which the test never called"
