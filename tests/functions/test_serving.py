"""The gateway's edge-function serving (`supaworker_local/functions.py`) with tiny Deno functions
in a scratch project: routing, the env a project injects, verify_jwt, restarts. Needs Deno, not
the database stack."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from supaworker_local import functions, keys, processes, tools
from supaworker_local.config import StackConfig
from supaworker_local.errors import ToolMissingError

try:
    tools.deno()
except ToolMissingError:  # pragma: no cover - CI installs Deno with `npm ci`
    pytest.skip("Deno is not installed (npm ci)", allow_module_level=True)

ECHO = """
export function echo(req: Request): Promise<Response> {
  return req.text().then((body) => {
    const url = new URL(req.url);
    const env: Record<string, string | undefined> = {};
    for (const name of ["SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY",
                        "SUPABASE_DB_URL"]) env[name] = Deno.env.get(name);
    return Response.json({
      pid: Deno.pid, method: req.method, path: url.pathname, search: url.search, body, env,
      authorization: req.headers.get("authorization"),
    });
  });
}
"""
FUNCTIONS = {
    "_shared/echo.ts": ECHO,
    "echo/index.ts": 'import { echo } from "../_shared/echo.ts";\nDeno.serve(echo);\n',
    "open/index.ts": 'import { echo } from "../_shared/echo.ts";\nDeno.serve(echo);\n',
    "off/index.ts": "Deno.serve(() => new Response('on'));\n",
    "broken/index.ts": "throw new Error('boom at boot');\n",
    "crash/index.ts": (
        'import { echo } from "../_shared/echo.ts";\n'
        "Deno.serve((req) => new URL(req.url).pathname.endsWith('/exit') ? Deno.exit(3) : "
        "echo(req));\n"
    ),
    "notes/README.md": "no index.ts: not a function\n",
}
CONFIG_TOML = """
[functions.open]
verify_jwt = false

[functions.off]
enabled = false
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    for relative, text in FUNCTIONS.items():
        path = tmp_path / "supabase" / "functions" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "supabase" / "config.toml").write_text(CONFIG_TOML)
    return tmp_path


@pytest.fixture()
def config(tmp_path: Path) -> StackConfig:
    config = StackConfig(state_dir=str(tmp_path / "state"))
    config.anon_key = keys.anon_key(config.jwt_secret)
    config.service_role_key = keys.service_role_key(config.jwt_secret)
    return config


@pytest.fixture()
async def client(project: Path, config: StackConfig) -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application()
    functions.setup_functions(app, config, project_dir=project)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_discovers_function_folders_only(project: Path) -> None:
    specs = functions.discover(project)
    assert sorted(specs) == ["broken", "crash", "echo", "open"]
    assert specs["open"].verify_jwt is False
    assert specs["echo"].verify_jwt is True


async def test_function_sees_its_path_query_and_body(
    client: TestClient[Any, Any], config: StackConfig
) -> None:
    resp = await client.post(
        "/functions/v1/echo/sub/path?name=a%20b&x=1",
        data=b'{"a":1}',
        headers=bearer(config.anon_key),
    )
    assert resp.status == 200
    seen = await resp.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo/sub/path"
    assert seen["search"] == "?name=a%20b&x=1"
    assert seen["body"] == '{"a":1}'


async def test_function_gets_the_project_secrets(
    client: TestClient[Any, Any], config: StackConfig
) -> None:
    seen = await (await client.get("/functions/v1/echo", headers=bearer(config.anon_key))).json()
    assert seen["env"] == {
        "SUPABASE_URL": config.api_url,
        "SUPABASE_ANON_KEY": config.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": config.service_role_key,
        "SUPABASE_DB_URL": config.db_url,
    }


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Error: Missing authorization header"),
        ({"Authorization": "Basic abc"}, "Error: Auth header is not 'Bearer {token}'"),
        ({"Authorization": "Bearer not-a-jwt"}, "Invalid JWT"),
        (bearer(keys.anon_key("another-secret-that-is-at-least-32-chars!")), "Invalid JWT"),
        (bearer(keys.mint(StackConfig.jwt_secret, "anon", ttl=-3600)), "Invalid JWT"),
    ],
    ids=["missing", "not-bearer", "not-jwt", "forged", "expired"],
)
async def test_verify_jwt_rejects(
    client: TestClient[Any, Any], headers: dict[str, str], message: str
) -> None:
    resp = await client.post("/functions/v1/echo", json={}, headers=headers)
    assert resp.status == 401
    assert await resp.json() == {"msg": message}
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_verify_jwt_lets_preflight_through(client: TestClient[Any, Any]) -> None:
    resp = await client.options("/functions/v1/echo")
    assert resp.status == 200
    assert (await resp.json())["method"] == "OPTIONS"


async def test_verify_jwt_false_lets_anyone_in(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/functions/v1/open")
    assert resp.status == 200
    assert (await resp.json())["authorization"] is None


async def test_new_api_keys_are_swapped_for_jwts(
    client: TestClient[Any, Any], config: StackConfig
) -> None:
    headers = {"apikey": config.publishable_key, **bearer(config.publishable_key)}
    seen = await (await client.get("/functions/v1/echo", headers=headers)).json()
    assert seen["authorization"] == f"Bearer {config.anon_key}"
    seen = await (
        await client.get("/functions/v1/echo", headers={"apikey": config.secret_key})
    ).json()
    assert seen["authorization"] == f"Bearer {config.service_role_key}"


@pytest.mark.parametrize("name", ["nope", "off", "_shared", "notes"])
async def test_unknown_or_disabled_function_is_404(
    client: TestClient[Any, Any], config: StackConfig, name: str
) -> None:
    resp = await client.get(f"/functions/v1/{name}", headers=bearer(config.anon_key))
    assert resp.status == 404
    assert await resp.text() == "Function not found"


async def test_function_that_fails_to_boot_is_503(
    client: TestClient[Any, Any], config: StackConfig
) -> None:
    resp = await client.get("/functions/v1/broken", headers=bearer(config.anon_key))
    assert resp.status == 503
    assert (await resp.json())["code"] == "BOOT_ERROR"
    log = Path(config.state_dir) / "log" / "functions.broken.log"
    assert "boom at boot" in log.read_text()


async def test_dead_function_is_restarted_by_next_request(
    client: TestClient[Any, Any], config: StackConfig
) -> None:
    auth = bearer(config.anon_key)
    first = await (await client.get("/functions/v1/crash", headers=auth)).json()
    resp = await client.get("/functions/v1/crash/exit", headers=auth)
    assert resp.status == 500
    assert (await resp.json())["code"] == "WORKER_ERROR"
    again = await client.get("/functions/v1/crash", headers=auth)
    assert again.status == 200
    assert (await again.json())["pid"] != first["pid"]


async def test_function_killed_between_requests_is_restarted(
    client: TestClient[Any, Any], config: StackConfig
) -> None:
    auth = bearer(config.anon_key)
    first = await (await client.get("/functions/v1/echo", headers=auth)).json()
    os.kill(first["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while processes.pid_alive(first["pid"]) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    resp = await client.get("/functions/v1/echo", headers=auth)
    assert resp.status == 200
    assert (await resp.json())["pid"] != first["pid"]


async def test_edited_function_is_restarted(
    client: TestClient[Any, Any],
    config: StackConfig,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(functions, "RELOAD_CHECK_INTERVAL", 0.0)
    auth = bearer(config.anon_key)
    first = await (await client.get("/functions/v1/echo", headers=auth)).json()
    shared = project / "supabase" / "functions" / "_shared" / "echo.ts"
    later = time.time() + 5
    os.utime(shared, (later, later))
    second = await (await client.get("/functions/v1/echo", headers=auth)).json()
    assert second["pid"] != first["pid"]


async def test_cleanup_stops_every_process(project: Path, config: StackConfig) -> None:
    app = web.Application()
    functions.setup_functions(app, config, project_dir=project)
    async with TestClient(TestServer(app)) as test_client:
        resp = await test_client.get("/functions/v1/open")
        pid = json.loads(await resp.text())["pid"]
        assert processes.pid_alive(pid)
    assert not processes.pid_alive(pid)
