"""Realtime's REST broadcast API (`BroadcastController`, `BroadcastSingleController`):

* `POST /realtime/v1/api/broadcast` with `{"messages": [{"topic","event","payload","private"?,
  "id"?}]}` (what realtime-js' `channel.send()` uses when the channel is not joined);
* `POST /realtime/v1/api/broadcast/{topic}/events/{event}` with a JSON or
  `application/octet-stream` body (realtime-py's `http_send`).

Both answer 202 and fan out to the sockets joined to the topic. Private topics need the RLS
policies of `realtime.messages`, which this endpoint does not implement: such messages are
dropped, as Realtime drops messages the caller may not write.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from supaworker_local.realtime import auth
from supaworker_local.realtime.protocol import UserBroadcast

if TYPE_CHECKING:
    from supaworker_local.realtime.server import RealtimeServer

log = logging.getLogger("supaworker_local.realtime")

BATCH_PATH = "/realtime/v1/api/broadcast"
SINGLE_PATH = "/realtime/v1/api/broadcast/{topic}/events/{event}"


def _unauthorized() -> web.Response:
    return web.json_response({"message": "Unauthorized"}, status=401)


def _token(server: RealtimeServer, request: web.Request) -> str | None:
    """Bearer token, else `apikey` (RealtimeWeb.AuthTenant), after the gateway's `sb_` swap."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, bearer = authorization.partition(" ")
    if scheme.lower() == "bearer" and bearer and not bearer.startswith("sb_"):
        return bearer
    apikey = request.headers.get("apikey") or (bearer if bearer.startswith("sb_") else None)
    if not apikey:
        return None
    return auth.translate_api_key(server.config, apikey, request.headers.get("User-Agent"))


def _authorized(server: RealtimeServer, request: web.Request) -> bool:
    try:
        token = _token(server, request)
        if token is None:
            return False
        auth.verify(server.config.jwt_secret, token)
    except auth.AuthError:
        return False
    return True


def _message_errors(message: Any) -> dict[str, list[str]]:
    if not isinstance(message, dict):
        return {"message": ["is invalid"]}
    errors: dict[str, list[str]] = {}
    for name in ("topic", "event"):
        if not isinstance(message.get(name), str) or not message.get(name):
            errors[name] = ["can't be blank"]
    if not isinstance(message.get("payload"), dict):
        errors["payload"] = ["can't be blank" if "payload" not in message else "is invalid"]
    return errors


def _skip_private(topic: str) -> None:
    log.warning(
        "Realtime dropped a private broadcast: private channels are not supported locally",
        extra={"action": "realtime.private_broadcast_dropped", "topic": topic},
    )


class BroadcastApi:
    def __init__(self, server: RealtimeServer) -> None:
        self._server = server

    async def batch(self, request: web.Request) -> web.Response:
        if not _authorized(self._server, request):
            return _unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errors": {"messages": ["is invalid"]}}, status=422)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return web.json_response({"errors": {"messages": ["can't be blank"]}}, status=422)
        errors = [_message_errors(m) for m in messages]
        if any(errors):
            return web.json_response({"errors": {"messages": errors}}, status=422)
        for message in messages:
            if message.get("private") is True:
                _skip_private(message["topic"])
                continue
            payload: dict[str, Any] = {
                "payload": message["payload"],
                "event": message["event"],
                "type": "broadcast",
            }
            if isinstance(message.get("id"), str):
                payload["meta"] = {"id": message["id"]}
            self._server.fan_out(message["topic"], payload)
        return web.Response(status=202)

    async def single(self, request: web.Request) -> web.Response:
        if not _authorized(self._server, request):
            return _unauthorized()
        topic, event = request.match_info["topic"], request.match_info["event"]
        if request.query.get("private") == "true":
            _skip_private(topic)
            return web.Response(status=202)
        raw = await request.read()
        if request.content_type == "application/octet-stream":
            self._server.fan_out(topic, UserBroadcast(event, raw, json_encoded=False))
            return web.Response(status=202)
        try:
            json.loads(raw)
        except ValueError:
            return web.json_response({"errors": {"payload": ["is invalid"]}}, status=422)
        self._server.fan_out(topic, UserBroadcast(event, raw, json_encoded=True))
        return web.Response(status=202)


def add_routes(app: web.Application, server: RealtimeServer) -> None:
    api = BroadcastApi(server)
    app.router.add_post(BATCH_PATH, api.batch)
    app.router.add_post(SINGLE_PATH, api.single)
