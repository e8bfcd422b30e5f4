"""The Realtime endpoint inside the gateway: handshake, subscriptions, poller life cycle."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from aiohttp import web

from supaworker_local.config import StackConfig
from supaworker_local.realtime import auth, checks, rest
from supaworker_local.realtime.bindings import Binding
from supaworker_local.realtime.channel import Channel
from supaworker_local.realtime.database import PUBLICATION, Pool, fetch_publication
from supaworker_local.realtime.dispatch import ChangeProcessor
from supaworker_local.realtime.poller import IDLE_MULTIPLIER, PollerUnavailable, ReplicationPoller
from supaworker_local.realtime.protocol import SERIALIZERS, V1, Frame, UserBroadcast
from supaworker_local.realtime.registry import Registry
from supaworker_local.realtime.socket import Connection

log = logging.getLogger("supaworker_local.realtime")

WEBSOCKET_PATH = "/realtime/v1/websocket"
MAX_FRAME_BYTES = 4 * 1024 * 1024
# How long a new subscription may wait for the replication slot before it reports an error.
SLOT_READY_TIMEOUT_S = 15.0


class RealtimeServer:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.registry = Registry()
        # Separate sessions, as Realtime has: the slot's own (inside the poller), one for
        # subscription validation and one for the per-change RLS checks.
        self._control = Pool(
            config.admin_db_url, size=2, application_name="realtime_subscription_manager"
        )
        self._checks = Pool(config.admin_db_url, size=2, application_name="realtime_rls")
        self.processor = ChangeProcessor(self.registry, self._checks)
        self.poller = ReplicationPoller(
            config.admin_db_url,
            interval_ms=config.realtime_poll_interval_ms,
            idle_multiplier=_int(config.extra.get("realtime_idle_multiplier"), IDLE_MULTIPLIER),
            process=self.processor.process,
            has_subscribers=self.registry.has_subscriptions,
            on_slot_recreated=self._announce_resubscribed,
        )
        self._connections: set[Connection] = set()

    # -- the handshake ------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        vsn = request.query.get("vsn", V1)
        serializer = SERIALIZERS.get(vsn)
        if serializer is None:
            return web.json_response(
                {"error": f'The client\'s requested serializer version "{vsn}" is not supported'},
                status=403,
            )
        try:
            token = auth.connect_token(
                self.config,
                request.query.get("apikey"),
                request.headers.get("x-api-key"),
                request.headers.get("User-Agent"),
            )
            auth.verify(self.config.jwt_secret, token)
        except auth.AuthError as exc:
            log.info(
                "Realtime connection refused: %s",
                exc.message,
                extra={"action": "realtime.connect_refused", "status": exc.status},
            )
            return web.json_response(exc.body(), status=exc.status)
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "Expected a websocket upgrade"}, status=400)
        await ws.prepare(request)
        connection = Connection(self, ws, serializer, token)
        self._connections.add(connection)
        log.info(
            "Realtime client connected",
            extra={"action": "realtime.connect", "vsn": vsn, "clients": len(self._connections)},
        )
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)
            log.info(
                "Realtime client disconnected",
                extra={"action": "realtime.disconnect", "clients": len(self._connections)},
            )
        return ws

    # -- postgres_changes ---------------------------------------------------------------------
    async def subscribe(self, channel: Channel, bindings: list[Binding]) -> None:
        """Validate the bindings, make sure the slot exists, then register them.

        Raises SubscriptionError (bad parameters, table not in the publication) or
        PollerUnavailable (database unreachable; the channel retries later).
        """
        try:
            async with self._control.connection() as db:
                for binding in bindings:
                    await checks.validate(db, binding, channel.role, PUBLICATION)
                publication = await fetch_publication(db)
        except (psycopg.OperationalError, OSError) as exc:
            raise PollerUnavailable(str(exc).strip()) from exc
        except psycopg.Error as exc:
            raise checks.SubscriptionError(
                "Unable to subscribe to changes with given parameters. An exception happened: "
                f"{exc}"
            ) from exc
        await self.poller.ensure_ready(SLOT_READY_TIMEOUT_S)
        # The poller must decode the tables just validated before we say "Subscribed".
        self.poller.set_publication(publication)
        if not channel.closed:
            self.registry.set_subscriptions(channel, bindings)
            log.info(
                "Realtime subscription live",
                extra={
                    "action": "realtime.subscribed",
                    "topic": channel.topic,
                    "role": channel.role,
                    "subscriptions": self.registry.subscription_count(),
                },
            )

    # -- broadcast ----------------------------------------------------------------------------
    def fan_out(
        self,
        name: str,
        payload: dict[str, Any] | UserBroadcast,
        *,
        private: bool = False,
        skip: Channel | None = None,
    ) -> None:
        """Send a broadcast to every channel joined to topic `name` (except `skip`)."""
        for member in self.registry.members((name, private)):
            if member is not skip:
                member.conn.send(Frame(None, None, member.topic, "broadcast", payload))

    def _announce_resubscribed(self) -> None:
        for channel in self.registry.subscribed_channels():
            channel.resubscribed()

    # -- life cycle ---------------------------------------------------------------------------
    async def on_startup(self, app: web.Application) -> None:
        self.poller.start()  # idles (no slot, no connection) until the first subscription

    async def on_shutdown(self, app: web.Application) -> None:
        for connection in list(self._connections):
            await connection.ws.close(code=1001, message=b"Server shutting down")

    async def on_cleanup(self, app: web.Application) -> None:
        await self.poller.stop()
        await self._control.close()
        await self._checks.close()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


SERVER_KEY = web.AppKey("realtime_server", RealtimeServer)


def setup_realtime(app: web.Application, config: StackConfig) -> None:
    """Mount `GET /realtime/v1/websocket` and the REST broadcast API on the gateway, and tie the
    poller to the gateway's life cycle."""
    server = RealtimeServer(config)
    app[SERVER_KEY] = server
    app.router.add_get(WEBSOCKET_PATH, server.websocket)
    rest.add_routes(app, server)
    app.on_startup.append(server.on_startup)
    app.on_shutdown.append(server.on_shutdown)
    app.on_cleanup.append(server.on_cleanup)
