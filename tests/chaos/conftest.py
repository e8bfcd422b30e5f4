"""Fixtures shared by the fault tests: a network namespace for a worker, and a users' slow
read through PostgREST's pool."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from supaworker_local.config import StackConfig
from tests.chaos.harness import Db
from tests.chaos.netns import HOST_ADDR, NS_ADDR, ip


@pytest.fixture()
def netns() -> Iterator[tuple[str, str]]:
    """A namespace with a veth link to the host: (namespace, host-side interface)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    tag = uuid.uuid4().hex[:6]
    name, host_if, ns_if = f"sw-{tag}", f"swh{tag}", f"swn{tag}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns add failed: {exc.stderr.decode().strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", f"{HOST_ADDR}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        for args in (
            ("addr", "add", f"{NS_ADDR}/30", "dev", ns_if),
            ("link", "set", ns_if, "up"),
            ("link", "set", "lo", "up"),
        ):
            ip("netns", "exec", name, "ip", *args)
        yield name, host_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture()
def slow_read(stack: StackConfig, admin_db: Db) -> Iterator[str]:
    """A user-callable RPC that holds its pool connection, in this database only."""
    admin_db.execute(
        "create or replace function public.chaos_slow_read(seconds double precision)"
        " returns integer language sql security invoker set search_path = ''"
        " as $$ select 1 from pg_catalog.pg_sleep(seconds) $$"
    )
    admin_db.execute("revoke all on function public.chaos_slow_read from public, anon")
    admin_db.execute("grant execute on function public.chaos_slow_read to authenticated")
    admin_db.execute("notify pgrst, 'reload schema'")
    url = f"{stack.api_url}/rest/v1/rpc/chaos_slow_read"
    yield url
    admin_db.execute("drop function if exists public.chaos_slow_read")
    admin_db.execute("notify pgrst, 'reload schema'")
    # The reaper keeps a saturation it saw on record and postpones rescues for a horizon
    # after (migration 0021): forget it, so that the next test on this shared stack starts
    # from a calm pool, as it would have before.
    admin_db.execute(
        "update public.queue_settings set pool_saturated_at = null, pool_calm_since = null"
    )
