"""Issue 2: the local Supabase-compatible stack, through the same code as `supaworker dev`."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import ClientOptions, create_client

from supaworker_local import processes
from supaworker_local import stack as dev_stack
from supaworker_local.config import StackConfig
from tests.conftest import ROOT, StackUser

pytestmark = pytest.mark.stack
CLI = [sys.executable, "-m", "supaworker.cli.main"]


def _whoami_function(admin_db: psycopg.Connection[tuple[object, ...]]) -> str:
    name = f"test_whoami_{uuid.uuid4().hex[:8]}"
    admin_db.execute(
        f"create function public.{name}() returns jsonb language sql stable as $$"
        " select jsonb_build_object('uid', auth.uid(), 'role', auth.role()) $$"
    )
    admin_db.execute(f"grant execute on function public.{name}() to anon, authenticated")
    admin_db.execute("notify pgrst, 'reload schema'")
    time.sleep(0.5)  # PostgREST reloads its schema cache asynchronously
    return name


def test_migrations_were_applied_by_supabase_db_push(
    admin_db: psycopg.Connection[tuple[object, ...]],
) -> None:
    rows = admin_db.execute(
        "select version, name, array_length(statements, 1) "
        "from supabase_migrations.schema_migrations order by version"
    ).fetchall()
    local = sorted(p.name.split("_", 1)[0] for p in (ROOT / "supabase/migrations").glob("*.sql"))
    assert [r[0] for r in rows] == local
    assert all(r[2] and r[2] > 0 for r in rows)  # the CLI records the statements it ran


def test_service_role_key_calls_rpc_through_rest_v1(stack: StackConfig) -> None:
    client = create_client(stack.api_url, stack.service_role_key)
    stats = client.rpc("queue_stats", {}).execute().data
    assert isinstance(stats, dict)
    assert "by_status" in stats


def test_anon_key_is_refused_service_functions(stack: StackConfig) -> None:
    client = create_client(stack.api_url, stack.anon_key)
    with pytest.raises(APIError) as info:
        client.rpc("queue_stats", {}).execute()
    assert info.value.code == "42501"


def test_user_token_makes_auth_uid_that_user(
    admin_db: psycopg.Connection[tuple[object, ...]], make_user: Callable[..., StackUser]
) -> None:
    fn = _whoami_function(admin_db)
    try:
        user = make_user()
        data = user.client.rpc(fn, {}).execute().data
        assert data == {"uid": str(user.id), "role": "authenticated"}
    finally:
        admin_db.execute(f"drop function public.{fn}()")


def test_new_secret_and_publishable_keys_work_through_the_gateway(
    admin_db: psycopg.Connection[tuple[object, ...]], stack: StackConfig
) -> None:
    fn = _whoami_function(admin_db)
    try:
        secret = create_client(stack.api_url, stack.secret_key)
        assert secret.rpc(fn, {}).execute().data["role"] == "service_role"
        publishable = create_client(stack.api_url, stack.publishable_key)
        assert publishable.rpc(fn, {}).execute().data["role"] == "anon"
    finally:
        admin_db.execute(f"drop function public.{fn}()")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),  # no key at all
        ({"apikey": "sb_secret_not-the-real-one"}, 401),
        ({"apikey": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.forged"}, 401),
    ],
)
def test_gateway_refuses_missing_and_wrong_keys(
    stack: StackConfig, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(f"{stack.api_url}/rest/v1/rpc/queue_stats", headers=headers, json={})
    assert response.status_code == status
    assert "message" in response.json()


def test_secret_key_from_a_browser_is_refused(stack: StackConfig) -> None:
    response = httpx.post(
        f"{stack.api_url}/rest/v1/rpc/queue_stats",
        json={},
        headers={"apikey": stack.secret_key, "User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"},
    )
    assert response.status_code == 401


def test_forged_user_token_is_refused_by_postgrest(stack: StackConfig) -> None:
    forged = create_client(
        stack.api_url,
        stack.anon_key,
        ClientOptions(headers={"Authorization": "Bearer " + stack.anon_key[:-4] + "AAAA"}),
    )
    with pytest.raises(APIError) as info:
        forged.rpc("queue_stats", {}).execute()
    assert info.value.code == "PGRST301"


def test_dev_env_prints_a_usable_shell_environment(stack: StackConfig) -> None:
    out = subprocess.run(
        [*CLI, "dev", "env", "--state-dir", stack.state_dir, "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    variables = json.loads(out)
    assert variables["SUPABASE_URL"] == stack.api_url
    assert variables["SUPABASE_SERVICE_ROLE_KEY"] == stack.service_role_key
    shell = subprocess.run(
        [*CLI, "dev", "env", "--state-dir", stack.state_dir],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"export SUPABASE_URL='{stack.api_url}'" in shell.splitlines()


def test_dev_user_prints_a_token_on_its_last_line(stack: StackConfig) -> None:
    email = f"cli-{uuid.uuid4().hex[:8]}@example.test"
    out = subprocess.run(
        [*CLI, "dev", "user", email, "--state-dir", stack.state_dir],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = out.strip().splitlines()[-1]
    client = create_client(
        stack.api_url, stack.anon_key, ClientOptions(headers={"Authorization": f"Bearer {token}"})
    )
    # The token is accepted: the user's own (empty) document list comes back.
    assert client.table("user_documents").select("id").execute().data == []
    again = subprocess.run(
        [*CLI, "dev", "user", email, "--state-dir", stack.state_dir, "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(again)["id"] in out  # same user found, not a second one


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """Ports free to listen on, with the next one free too (PostgREST's admin port is the
    REST port + 1). Taken below the ephemeral range (32768+), where the tests' own outgoing
    connections would otherwise take a port between this check and the server's bind."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        taken = {q for p in ports for q in (p, p + 1)}
        if not {port, port + 1} & taken and _bindable(port) and _bindable(port + 1):
            ports.append(port)
    return ports


@pytest.fixture()
def throwaway_state(tmp_path: Path) -> Iterator[Path]:
    """A state folder whose stack is torn down even when the test fails half-way."""
    state = tmp_path / "state"
    yield state
    dev_stack.down(state, reset=True)


def test_stack_comes_up_from_nothing_and_down_leaves_no_process(throwaway_state: Path) -> None:
    """A second, throwaway stack on other ports: up from an empty folder, then down."""
    state = throwaway_state
    env = {**os.environ, "SUPAWORKER_PROJECT_DIR": str(ROOT)}
    db_port, api_port, rest_port = _free_ports(3)
    up = subprocess.run(
        [
            *CLI,
            "dev",
            "up",
            "--state-dir",
            str(state),
            "--db-port",
            str(db_port),
            "--api-port",
            str(api_port),
            "--postgrest-port",
            str(rest_port),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    config = StackConfig.load(state)
    status = json.loads(
        subprocess.run(
            [*CLI, "dev", "status", "--state-dir", str(state), "--json"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
    )
    assert {s["name"]: s["healthy"] for s in status} == {
        "postgres": True,
        "postgrest": True,
        "gateway": True,
    }
    pids = [s["pid"] for s in status if s["pid"]]
    postmaster = int((config.pg_path / "pgdata" / "postmaster.pid").read_text().split()[0])
    client = create_client(config.api_url, config.service_role_key)
    assert "by_status" in client.rpc("queue_stats", {}).execute().data

    down = subprocess.run(
        [*CLI, "dev", "down", "--reset", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    for pid in [*pids, postmaster]:
        assert not processes.pid_alive(pid), f"process {pid} survived dev down"
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
    assert not state.exists() and not config.pg_path.exists()  # --reset wiped the data


def test_demo_processes_every_sample_document_on_two_workers(throwaway_state: Path) -> None:
    """The README's main command, `make demo` = set-up + `supaworker demo`, on a throwaway
    stack: 36 sample documents, workers vps1 and vps2, one transient failure retried."""
    state = throwaway_state
    env = {**os.environ, "SUPAWORKER_PROJECT_DIR": str(ROOT), "COLUMNS": "200"}
    db_port, api_port, rest_port = _free_ports(3)
    ports = ["--db-port", str(db_port), "--api-port", str(api_port)]
    ports += ["--postgrest-port", str(rest_port)]
    up = subprocess.run(
        [*CLI, "dev", "up", "--state-dir", str(state), *ports],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    demo = subprocess.run(
        [*CLI, "demo", "--state-dir", str(state), "--timeout", "120"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "36/36 completed; 1 job(s) failed once and were retried" in demo.stdout
    config = StackConfig.load(state)
    with psycopg.connect(config.admin_db_url) as conn:
        rows = conn.execute(
            "select q.status, q.assigned_to, q.retry_count from public.processing_queue q"
            " join auth.users u on u.id = q.user_id where u.email = 'demo@example.test'"
        ).fetchall()
    assert len(rows) == 36 and {r[0] for r in rows} == {"completed"}
    # Which worker took how many depends on start-up timing; none other took any.
    assert {r[1] for r in rows} <= {"vps1", "vps2"}
    assert sorted(r[2] for r in rows)[-2:] == [0, 1]  # exactly one retry
