"""The local API gateway: what Kong (and the Realtime / Functions routers) do on Supabase.

One port serves `/rest/v1/*` (proxied to PostgREST with the prefix stripped),
`/realtime/v1/websocket` and `/functions/v1/<name>`. API keys are checked and translated as
Supabase's gateway does: the new opaque `sb_publishable_...` / `sb_secret_...` keys are
replaced by the matching legacy JWT before the request reaches PostgREST, which only
understands JWTs.

Run as `python -m supaworker_local.gateway --state-dir DIR` (started by `supaworker dev up`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web

from supaworker_local import keys, tools
from supaworker_local.config import StackConfig

log = logging.getLogger("supaworker_local.gateway")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
CONFIG_KEY = web.AppKey("config", StackConfig)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


class KeyRejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def translate_keys(
    config: StackConfig, apikey: str | None, authorization: str | None, user_agent: str | None
) -> str:
    """Return the `Authorization` header PostgREST should see, or raise KeyRejected.

    Mirrors the CLI's kong.yml / ApiProxy.ts rule: an `sb_` key is swapped for the minted JWT
    of its role when `Authorization` is missing or carries that same `sb_` key.
    """
    if not apikey:
        raise KeyRejected("No API key found in request")
    if apikey.startswith("sb_"):
        if apikey == config.secret_key:
            if user_agent and user_agent.startswith("Mozilla/"):
                raise KeyRejected("Secret API keys can only be used in a protected environment")
            minted = config.service_role_key
        elif apikey == config.publishable_key:
            minted = config.anon_key
        else:
            raise KeyRejected("Invalid API key")
        if authorization is None or authorization == f"Bearer {apikey}":
            return f"Bearer {minted}"
        if authorization.startswith("Bearer sb_"):
            raise KeyRejected("Invalid API key: Authorization does not match apikey")
        return authorization
    try:
        claims = keys.decode(config.jwt_secret, apikey)
    except jwt.InvalidTokenError as exc:
        raise KeyRejected("Invalid API key") from exc
    if claims.get("role") not in ("anon", "service_role"):
        raise KeyRejected("Invalid API key: the apikey must be the project's anon or service key")
    return authorization or f"Bearer {apikey}"


def _reject(message: str) -> web.Response:
    return web.json_response({"message": message}, status=401)


async def rest_proxy(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    apikey = request.headers.get("apikey") or request.query.get("apikey")
    if request.method == "OPTIONS":
        authorization = request.headers.get("Authorization")
    else:
        try:
            authorization = translate_keys(
                config,
                apikey,
                request.headers.get("Authorization"),
                request.headers.get("User-Agent"),
            )
        except KeyRejected as exc:
            return _reject(exc.message)
    # The key is the gateway's business, never PostgREST's (Kong's key-auth with
    # hide_credentials): left in the query it is read as a filter or an RPC argument, and
    # PostgREST's error quotes it back ("failed to parse filter (sb_secret_...)").
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in ("authorization", "apikey")
    }
    if authorization:
        headers["Authorization"] = authorization
    params = [(k, v) for k, v in request.query.items() if k != "apikey"]
    tail = request.match_info["tail"]
    url = f"{config.postgrest_url}/{tail}"
    body = await request.read()
    session = request.app[SESSION_KEY]
    try:
        async with session.request(
            request.method,
            url,
            params=params,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"
            }
            return web.Response(status=upstream.status, body=payload, headers=out_headers)
    except aiohttp.ClientConnectionError:
        return web.json_response(
            {"message": "An invalid response was received from the upstream server"}, status=502
        )


async def frontend_config(request: web.Request) -> web.Response:
    """The example pages' settings: the API URL and the anon key (public by design)."""
    config = request.app[CONFIG_KEY]
    body = json.dumps({"url": config.api_url, "anonKey": config.anon_key})
    return web.Response(
        text=f"window.SUPAWORKER_CONFIG = {body};\n", content_type="application/javascript"
    )


STATIC_EXAMPLES = ("frontend", "dashboard")


def add_static_examples(app: web.Application) -> None:
    """Serve the browser examples (examples/frontend, examples/dashboard), each with the same
    config.js, supabase-js's browser build (from npm, no CDN) and supaworker's."""
    root = tools.project_root()
    bundle = root / "node_modules" / "@supabase" / "supabase-js" / "dist" / "umd" / "supabase.js"
    if not bundle.exists():
        return

    def serve(path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.FileResponse(path)

        return handler

    app.router.add_get("/vendor/supabase.js", serve(bundle))
    # supaworker's browser build, one file for both examples (clients/js/scripts/sync.mjs).
    client = root / "examples" / "vendor" / "supaworker.js"
    if client.exists():
        app.router.add_get("/vendor/supaworker.js", serve(client))
    for name in STATIC_EXAMPLES:
        folder = root / "examples" / name
        if not folder.is_dir():
            continue
        app.router.add_get(f"/examples/{name}/config.js", frontend_config)
        app.router.add_get(f"/examples/{name}/", serve(folder / "index.html"))
        app.router.add_static(f"/examples/{name}/", folder)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"gateway": "ok"})


async def _open_session(app: web.Application) -> None:
    app[SESSION_KEY] = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        connector=aiohttp.TCPConnector(limit=256),
        auto_decompress=False,
    )


async def _close_session(app: web.Application) -> None:
    await app[SESSION_KEY].close()


def build_app(config: StackConfig) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[CONFIG_KEY] = config
    app.on_startup.append(_open_session)
    app.on_cleanup.append(_close_session)
    app.router.add_get("/_stack/health", health)
    app.router.add_route("*", "/rest/v1/{tail:.*}", rest_proxy)
    add_static_examples(app)
    # Realtime and edge functions live in their own modules; each adds its routes.
    for module_name, setup_name in (
        ("supaworker_local.realtime", "setup_realtime"),
        ("supaworker_local.functions", "setup_functions"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        getattr(module, setup_name)(app, config)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = StackConfig.load(args.state_dir)
    app = build_app(config)
    web.run_app(
        app,
        host=config.host,
        port=config.api_port,
        print=None,
        access_log=None,
        handle_signals=True,
        shutdown_timeout=2,
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
