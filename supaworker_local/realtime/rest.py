"""Realtime's REST broadcast API (`BroadcastController`, `BroadcastSingleController`):

* `POST /realtime/v1/api/broadcast` with `{"messages": [{"topic","event","payload","private"?,
  "id"?}]}` (what realtime-js' `channel.send()` uses when the channel is not joined);
* `POST /realtime/v1/api/broadcast/{topic}/events/{event}` with a JSON or
  `application/octet-stream` body (realtime-py's `http_send`).

Both answer 202 and fan out to the sockets joined to the topic. A private message is sent only
if the caller may write to its topic (the INSERT policies of `realtime.messages`, checked with
the caller's claims; the service role bypasses RLS), else dropped, as Realtime drops them.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from supaworker_local.realtime import auth
from supaworker_local.realtime.authorization import AuthorizationError, Policies, PolicyError
from supaworker_local.realtime.limits import (
    PAYLOAD_TOO_LARGE,
    REST_BATCH_TOO_BIG,
    REST_RATE_EXCEEDED,
    Limits,
)
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


def _authorized(server: RealtimeServer, request: web.Request) -> auth.Claims | None:
    try:
        token = _token(server, request)
        if token is None:
            return None
        return auth.verify(server.config.jwt_secret, token)
    except auth.AuthError:
        return None


def _too_many(message: str) -> web.Response:
    return web.json_response({"message": message}, status=429)


def _message_errors(message: Any, limits: Limits) -> dict[str, list[str]]:
    if not isinstance(message, dict):
        return {"message": ["is invalid"]}
    errors: dict[str, list[str]] = {}
    for name in ("topic", "event"):
        if not isinstance(message.get(name), str) or not message.get(name):
            errors[name] = ["can't be blank"]
    if not isinstance(message.get("payload"), dict):
        errors["payload"] = ["can't be blank" if "payload" not in message else "is invalid"]
    elif limits.payload_too_large(len(json.dumps(message["payload"]).encode())):
        errors["payload"] = [PAYLOAD_TOO_LARGE]
    return errors


async def _may_send_private(server: RealtimeServer, claims: auth.Claims, topic: str) -> bool:
    allowed = False
    try:
        policies = Policies()
        await server.write_policies(topic, claims, policies)
        allowed = policies.broadcast_write is True
    except (AuthorizationError, PolicyError) as exc:
        log.warning(
            "Realtime could not check the write policies of %s: %s",
            topic,
            exc,
            extra={"action": "realtime.write_check_failed", "topic": topic},
        )
    if not allowed:
        log.info(
            "Realtime dropped a private broadcast the caller may not send",
            extra={"action": "realtime.private_broadcast_dropped", "topic": topic},
        )
    return allowed


class BroadcastApi:
    def __init__(self, server: RealtimeServer) -> None:
        self._server = server

    async def batch(self, request: web.Request) -> web.Response:
        claims = _authorized(self._server, request)
        if claims is None:
            return _unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errors": {"messages": ["is invalid"]}}, status=422)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return web.json_response({"errors": {"messages": ["can't be blank"]}}, status=422)
        quotas = self._server.quotas
        errors = [_message_errors(m, quotas.limits) for m in messages]
        if any(errors):
            return web.json_response({"errors": {"messages": errors}}, status=422)
        limit = quotas.limits.max_events_per_second
        if limit is not None and quotas.events.avg > limit:
            return _too_many(REST_RATE_EXCEEDED)
        if limit is not None and len(messages) + quotas.events.avg > limit:
            return _too_many(REST_BATCH_TOO_BIG)
        for message in messages:
            private = message.get("private") is True
            if private and not await _may_send_private(self._server, claims, message["topic"]):
                continue
            payload: dict[str, Any] = {
                "payload": message["payload"],
                "event": message["event"],
                "type": "broadcast",
            }
            if isinstance(message.get("id"), str):
                payload["meta"] = {"id": message["id"]}
            self._server.quotas.events.add()
            self._server.fan_out(message["topic"], payload, private=private)
        return web.Response(status=202)

    async def single(self, request: web.Request) -> web.Response:
        claims = _authorized(self._server, request)
        if claims is None:
            return _unauthorized()
        topic, event = request.match_info["topic"], request.match_info["event"]
        private = request.query.get("private") == "true"
        raw = await request.read()
        binary = request.content_type == "application/octet-stream"
        if not binary:
            try:
                json.loads(raw)
            except ValueError:
                return web.json_response({"errors": {"payload": ["is invalid"]}}, status=422)
        quotas = self._server.quotas
        if quotas.limits.payload_too_large(len(raw)):
            return web.json_response({"errors": {"payload": [PAYLOAD_TOO_LARGE]}}, status=422)
        limit = quotas.limits.max_events_per_second
        if limit is not None and quotas.events.avg >= limit:
            return _too_many(REST_RATE_EXCEEDED)
        if private and not await _may_send_private(self._server, claims, topic):
            return web.Response(status=202)
        self._server.quotas.events.add()
        self._server.fan_out(
            topic, UserBroadcast(event, raw, json_encoded=not binary), private=private
        )
        return web.Response(status=202)


def add_routes(app: web.Application, server: RealtimeServer) -> None:
    api = BroadcastApi(server)
    app.router.add_post(BATCH_PATH, api.batch)
    app.router.add_post(SINGLE_PATH, api.single)
