"""Edge functions for the local stack: `/functions/v1/<name>` served by real Deno.

What Supabase's edge runtime and its gateway do, reduced to what a project needs locally:

- Every folder `supabase/functions/<name>/` with an `index.ts` (or the `entrypoint` given in
  `supabase/config.toml`) is a function; names follow the CLI's slug rule, so `_shared` is not.
- Each function runs as its own `deno run --allow-net --allow-env --allow-read` process on a
  private port (Deno honours `DENO_SERVE_ADDRESS` for a `Deno.serve()` without a port), with
  the secrets a project injects: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY,
  SUPABASE_DB_URL. Processes are spawned when the gateway starts and waited for on the first
  request only, so `supaworker dev up` is not slowed by Deno's start-up or its first npm fetch.
  A process that died is started again by the next request, and one whose sources changed
  since it started is restarted (as `supabase functions serve` reloads on save).
- As on Supabase, the function sees the path without `/functions/v1`: `/<name>/...?query`.
- The gateway does what Kong and the runtime's main worker do before the function runs: an
  `sb_` API key in place of a JWT is swapped for the matching legacy key (kong.yml), then, for
  functions with `verify_jwt = true` (the default), `Authorization: Bearer <jwt>` must be an
  HS256 token signed with the project's JWT secret (`OPTIONS` is let through for CORS).

Deno's module cache is its default one (or `$DENO_DIR`): the npm packages are downloaded once
per machine (the first start on a clean one takes a few seconds, while `dev up` carries on),
and `supaworker dev down --reset` does not throw them away. Each function's output goes to
`<state>/log/functions.<name>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from yarl import URL

from supaworker_local import keys, processes, tools
from supaworker_local.config import StackConfig
from supaworker_local.gateway import HOP_BY_HOP

log = logging.getLogger("supaworker_local.functions")

PREFIX = "/functions/v1"
# The Supabase CLI's function slug pattern: a letter first, so `_shared` is never a function.
SLUG = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
DENO_FLAGS = ("--allow-net", "--allow-env", "--allow-read", "--no-prompt")
# A first start on a clean machine downloads the npm packages a function imports.
BOOT_TIMEOUT = 120.0
# Kong's read_timeout for functions in the CLI (the hosted request idle timeout).
REQUEST_TIMEOUT = 150.0
# How often a request may stat the sources to find edits (a few dozen small files).
RELOAD_CHECK_INTERVAL = 1.0
SOURCE_SUFFIXES = frozenset({".ts", ".tsx", ".js", ".mjs", ".json", ".jsonc"})
# What Deno itself needs from the gateway's environment to fetch npm packages: its cache,
# proxies and extra CAs (behind a TLS-inspecting proxy Deno trusts NODE_EXTRA_CA_CERTS, not
# SSL_CERT_FILE), plus every DENO_* setting. The rest of the developer's environment stays
# out, as on Supabase, where a function sees only the project's secrets.
PASSTHROUGH_ENV = frozenset(
    {
        "HOME",
        "XDG_CACHE_HOME",
        "TZ",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "NPM_CONFIG_REGISTRY",
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
# Kong's cors plugin adds this to everything on the functions route, gateway errors included.
GATEWAY_CORS = {"Access-Control-Allow-Origin": "*"}


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    entrypoint: Path
    verify_jwt: bool = True
    deno_config: Path | None = None
    # Where edits are looked for: supabase/functions (the function and `_shared`).
    sources_dir: Path | None = None


# -- discovery -------------------------------------------------------------------------------
def read_function_settings(supabase_dir: Path) -> dict[str, dict[str, Any]]:
    """The `[functions.<name>]` tables of supabase/config.toml (empty when there is none)."""
    config_file = supabase_dir / "config.toml"
    if not config_file.exists():
        return {}
    functions = tomllib.loads(config_file.read_text()).get("functions", {})
    return {name: value for name, value in functions.items() if isinstance(value, dict)}


def _deno_config(function_dir: Path) -> Path | None:
    """The function's own deno.json, else the shared one in supabase/functions/."""
    for directory in (function_dir, function_dir.parent):
        for name in ("deno.json", "deno.jsonc"):
            if (directory / name).exists():
                return directory / name
    return None


def discover(project_dir: Path) -> dict[str, FunctionSpec]:
    supabase_dir = project_dir.resolve() / "supabase"
    functions_dir = supabase_dir / "functions"
    settings = read_function_settings(supabase_dir)
    specs: dict[str, FunctionSpec] = {}
    if not functions_dir.is_dir():
        return specs
    for function_dir in sorted(functions_dir.iterdir()):
        name = function_dir.name
        if not (function_dir.is_dir() and SLUG.match(name)):
            continue
        options = settings.get(name, {})
        if options.get("enabled", True) is False:
            continue
        entry = options.get("entrypoint")
        entrypoint = (supabase_dir / entry).resolve() if entry else function_dir / "index.ts"
        if not entrypoint.exists():
            continue
        specs[name] = FunctionSpec(
            name,
            entrypoint,
            bool(options.get("verify_jwt", True)),
            _deno_config(function_dir),
            functions_dir,
        )
    return specs


def function_env(config: StackConfig, port: int) -> dict[str, str]:
    """The environment of one function process: the project's secrets, and its address."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in PASSTHROUGH_ENV or name.startswith("DENO_")
    }
    env.update(
        {
            "SUPABASE_URL": config.api_url,
            "SUPABASE_ANON_KEY": config.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": config.service_role_key,
            "SUPABASE_DB_URL": config.db_url,
            "DENO_SERVE_ADDRESS": f"tcp:{config.host}:{port}",
            "DENO_NO_UPDATE_CHECK": "1",
            "NO_COLOR": "1",
        }
    )
    return env


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _newest_mtime(paths: Iterator[Path]) -> float:
    newest = 0.0
    for path in paths:
        with contextlib.suppress(OSError):
            newest = max(newest, path.stat().st_mtime)
    return newest


class BootError(Exception):
    """The function's process exited or did not listen in time."""


# -- one function's process ------------------------------------------------------------------
@dataclass
class DenoFunction:
    spec: FunctionSpec
    config: StackConfig
    deno: str
    log_dir: Path
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    ready: bool = False
    # The current process listened at least once (so a later exit is a crash, not a boot error).
    served: bool = False
    checked_sources_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"functions.{self.spec.name}.log"

    @property
    def running(self) -> bool:
        # pid_alive sees a death at once; returncode only once asyncio has reaped the child.
        return (
            self.process is not None
            and self.process.returncode is None
            and processes.pid_alive(self.process.pid)
        )

    async def start(self) -> None:
        self.port = _free_port(self.config.host)
        argv = [self.deno, "run", *DENO_FLAGS]
        if self.spec.deno_config is not None:
            argv += ["--config", str(self.spec.deno_config)]
        argv.append(str(self.spec.entrypoint))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Same process group as the gateway: `dev down` signals the group and takes these too.
        with open(self.log_file, "ab") as out:
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd=self.spec.entrypoint.parent,
                    env=function_env(self.config, self.port),
                )
            except OSError as exc:
                raise BootError(
                    f"function {self.spec.name}: cannot run {self.deno}: {exc}"
                ) from exc
        self.started_at = time.time()
        self.checked_sources_at = time.monotonic()
        self.ready = self.served = False
        log.info("function %s: pid %s on port %s", self.spec.name, self.process.pid, self.port)

    async def stop(self, timeout: float = 3.0) -> None:
        process, self.process, self.ready = self.process, None, False
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # already dead, not yet reaped
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()

    def _sources_changed(self) -> bool:
        """True when a file the function may import changed after the process started."""
        now = time.monotonic()
        if now - self.checked_sources_at < RELOAD_CHECK_INTERVAL:
            return False
        self.checked_sources_at = now
        root = self.spec.sources_dir or self.spec.entrypoint.parent
        files = (p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES)
        return _newest_mtime(files) > self.started_at

    async def ensure_ready(self) -> int:
        """Start the process if it is not running (or is stale), wait until it listens."""
        async with self.lock:
            if self.running and self._sources_changed():
                log.info("function %s: sources changed, restarting", self.spec.name)
                await self.stop()
            if not self.running:
                await self.start()
            if not self.ready:
                try:
                    await self._wait_listening()
                except BootError:
                    # A process that served before and has just died (its exit not yet
                    # reaped when this request looked) is restarted; one that never
                    # listened failed to boot, and says so.
                    if not self.served:
                        raise
                    await self.stop()
                    await self.start()
                    await self._wait_listening()
                self.ready = self.served = True
            return self.port

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                raise BootError(f"function {self.spec.name} exited; see {self.log_file}")
            try:
                _, writer = await asyncio.open_connection(self.config.host, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        await self.stop()
        raise BootError(f"function {self.spec.name} did not listen within {BOOT_TIMEOUT:.0f}s")


# -- the gateway side ------------------------------------------------------------------------
def kong_authorization(
    config: StackConfig, authorization: str | None, apikey: str | None
) -> str | None:
    """The CLI kong.yml rule: an `sb_` key (or no Authorization) becomes the minted JWT of the
    role its `apikey` names; any other Authorization is passed on untouched."""
    if authorization and not authorization.startswith("Bearer sb_"):
        return authorization
    if apikey == config.secret_key:
        return f"Bearer {config.service_role_key}"
    if apikey == config.publishable_key:
        return f"Bearer {config.anon_key}"
    return authorization


def verify_jwt(config: StackConfig, authorization: str | None) -> str | None:
    """None if the request may pass, else the message of the runtime's 401 (main.ts)."""
    if not authorization:
        return "Error: Missing authorization header"
    scheme, _, token = authorization.partition(" ")
    if scheme != "Bearer" or not token:
        return "Error: Auth header is not 'Bearer {token}'"
    try:
        keys.decode(config.jwt_secret, token)
    except jwt.InvalidTokenError:
        return "Invalid JWT"
    return None


def _runtime_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"code": code, "message": message}, status=status, headers=GATEWAY_CORS
    )


FUNCTIONS_KEY = web.AppKey("functions", dict[str, DenoFunction])
FUNCTIONS_SESSION_KEY = web.AppKey("functions_session", aiohttp.ClientSession)


async def invoke(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    function = request.app[FUNCTIONS_KEY].get(name)
    if function is None:
        return web.Response(status=404, text="Function not found", headers=GATEWAY_CORS)
    config = function.config
    authorization = kong_authorization(
        config, request.headers.get("Authorization"), request.headers.get("apikey")
    )
    if function.spec.verify_jwt and request.method != "OPTIONS":
        problem = verify_jwt(config, authorization)
        if problem is not None:
            return web.json_response({"msg": problem}, status=401, headers=GATEWAY_CORS)
    try:
        port = await function.ensure_ready()
    except BootError as exc:
        log.warning("%s", exc)
        return _runtime_error(503, "BOOT_ERROR", "Worker failed to boot (please check logs)")
    return await _proxy(request, function, port, authorization)


def _upstream_headers(request: web.Request, authorization: str | None) -> dict[str, str]:
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"
    }
    if authorization:
        headers["Authorization"] = authorization
    if request.remote:
        headers["X-Forwarded-For"] = request.remote
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


async def _proxy(
    request: web.Request, function: DenoFunction, port: int, authorization: str | None
) -> web.StreamResponse:
    # The raw (still percent-encoded) path and query, minus the prefix Kong strips.
    target = URL(
        f"http://{function.config.host}:{port}{request.raw_path[len(PREFIX) :]}", encoded=True
    )
    body = await request.read()
    session = request.app[FUNCTIONS_SESSION_KEY]
    response = web.StreamResponse()
    try:
        async with session.request(
            request.method,
            target,
            data=body or None,
            headers=_upstream_headers(request, authorization),
            allow_redirects=False,
        ) as upstream:
            response.set_status(upstream.status, upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            # The body is passed on byte for byte (no decompression), so a declared length
            # stays true; without one (a stream) aiohttp falls back to chunked encoding.
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            # Streamed, so server-sent events and large bodies pass through as they come.
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError):
        # The process died (or hung) mid-request; the next request checks it and restarts it.
        function.ready = False
        if response.prepared:
            raise
        return _runtime_error(
            500, "WORKER_ERROR", "Function exited due to an error (please check logs)"
        )
    await response.write_eof()
    return response


async def _start_functions(app: web.Application) -> None:
    app[FUNCTIONS_SESSION_KEY] = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=REQUEST_TIMEOUT),
        auto_decompress=False,
        # A fresh local connection per request (a fraction of a millisecond): no POST is ever
        # sent on a pooled connection that Deno is closing for idleness at that moment.
        connector=aiohttp.TCPConnector(force_close=True),
    )
    # Spawn now, wait later: the first request (not `dev up`) pays for a slow first start.
    for function in app[FUNCTIONS_KEY].values():
        try:
            await function.start()
        except BootError as exc:  # reported again, as a 503, by the first request
            log.warning("%s", exc)


async def _stop_functions(app: web.Application) -> None:
    await asyncio.gather(*(f.stop() for f in app[FUNCTIONS_KEY].values()))
    await app[FUNCTIONS_SESSION_KEY].close()


def setup_functions(
    app: web.Application, config: StackConfig, project_dir: Path | None = None
) -> None:
    """Serve every function under `<project>/supabase/functions` at `/functions/v1/<name>`."""
    specs = discover(project_dir or tools.project_root())
    functions: dict[str, DenoFunction] = {}
    if specs:
        deno = tools.deno()
        log_dir = config.path / "log"
        functions = {
            name: DenoFunction(spec, config, deno, log_dir) for name, spec in specs.items()
        }
    app[FUNCTIONS_KEY] = functions
    app.on_startup.append(_start_functions)
    app.on_cleanup.append(_stop_functions)
    app.router.add_route("*", PREFIX + "/{name}", invoke)
    app.router.add_route("*", PREFIX + "/{name}/{tail:.*}", invoke)
