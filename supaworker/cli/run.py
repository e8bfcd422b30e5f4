"""`supaworker run`: the process on each VPS."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from supaworker import logs, schema
from supaworker.client import AsyncQueueClient
from supaworker.config import WorkerSettings
from supaworker.exceptions import ConfigurationError, QueueError, TransportError
from supaworker.transport import HandlerClient
from supaworker.worker.command_handler import CommandHandler
from supaworker.worker.handler import Handler, load_handler
from supaworker.worker.http import WorkerHTTP
from supaworker.worker.loop import EXIT_CONFIG, EXIT_UNAVAILABLE, Worker
from supaworker.worker.metrics import InstrumentedTransport, JobCounter, WorkerMetrics
from supaworker.worker.url_handler import UrlHandler

log = logging.getLogger("supaworker.worker")

EXIT_CODES_HELP = """Exit codes: 0 stopped cleanly (or --burst found nothing left);
1 an internal error (a side task died); 2 configuration error (missing URL or key, bad
handler, key refused, database schema older than this package needs); 3 the Supabase API
could not be reached at start; 130 forced stop (second SIGINT/SIGTERM)."""


def _opt(envvar: str, help_text: str, **kw: Any) -> Any:
    # The option does not read the variable itself: WorkerSettings (pydantic-settings) reads
    # the environment and the .env file once, with the same parsing for both (a variable such
    # as SUPAWORKER_QUEUES=ocr,pdf is a comma-separated list there). The help names it.
    return typer.Option(help=f"{help_text} [env: {envvar}]", **kw)


def fail(message: str, code: int = EXIT_CONFIG) -> typer.Exit:
    """One clear line on stderr, no traceback."""
    typer.echo(f"supaworker: error: {message}", err=True)
    return typer.Exit(code)


def handler_from(settings: WorkerSettings) -> Handler:
    """The handler the settings name: exactly one of them is set (require_connection)."""
    if settings.handler_command:
        return CommandHandler(settings.handler_command, cancel_grace=settings.handler_cancel_grace)
    if settings.handler_url:
        token = settings.handler_token.get_secret_value() if settings.handler_token else None
        return UrlHandler(settings.handler_url, token=token)
    return load_handler(settings.handler)


def run(
    handler: Annotated[
        str | None, _opt("SUPAWORKER_HANDLER", "The processing function, MODULE:FUNCTION")
    ] = None,
    handler_command: Annotated[
        str | None,
        _opt(
            "SUPAWORKER_HANDLER_COMMAND",
            "A handler in any language: this command runs as one child process speaking JSON "
            "lines (README: Handlers in other languages)",
        ),
    ] = None,
    handler_url: Annotated[
        str | None,
        _opt(
            "SUPAWORKER_HANDLER_URL",
            "A handler as an HTTP service: each job is POSTed here as JSON (bearer token from "
            "SUPAWORKER_HANDLER_TOKEN)",
        ),
    ] = None,
    worker_id: Annotated[
        str | None, _opt("SUPAWORKER_WORKER_ID", "This worker's id (default: host name)")
    ] = None,
    concurrency: Annotated[
        int | None, _opt("SUPAWORKER_CONCURRENCY", "Jobs run at once (default 1)")
    ] = None,
    queue: Annotated[
        list[str] | None,
        _opt(
            "SUPAWORKER_QUEUES",
            "Queue to serve; repeat for several (default all)",
            metavar="QUEUE",
        ),
    ] = None,
    capabilities: Annotated[
        str | None, _opt("SUPAWORKER_CAPABILITIES", "JSON object of what this worker offers")
    ] = None,
    poll_interval: Annotated[
        float | None, _opt("SUPAWORKER_POLL_INTERVAL", "Seconds between polls without Realtime (5)")
    ] = None,
    heartbeat_interval: Annotated[
        float | None, _opt("SUPAWORKER_HEARTBEAT_INTERVAL", "Seconds between heartbeats (5)")
    ] = None,
    job_timeout: Annotated[
        str | None,
        _opt(
            "SUPAWORKER_JOB_TIMEOUT",
            "Seconds before an attempt fails (3600; 0 or 'none': no limit)",
            metavar="SECONDS",
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float | None, _opt("SUPAWORKER_SHUTDOWN_TIMEOUT", "Seconds to finish jobs on SIGTERM (30)")
    ] = None,
    executor: Annotated[
        str | None, _opt("SUPAWORKER_EXECUTOR", "Sync handlers in a 'thread' or a 'process'")
    ] = None,
    realtime: Annotated[
        bool | None, _opt("SUPAWORKER_REALTIME", "Wake on new jobs through Supabase Realtime")
    ] = None,
    burst: Annotated[bool, _opt("SUPAWORKER_BURST", "Exit 0 once nothing is claimable")] = False,
    log_format: Annotated[str | None, _opt("SUPAWORKER_LOG_FORMAT", "text or json")] = None,
    http_port: Annotated[
        int | None,
        _opt(
            "SUPAWORKER_HTTP_PORT",
            "Serve /metrics, /healthz, /readyz (and /internal/process when "
            "SUPAWORKER_INTERNAL_API_KEY is set) on this port",
        ),
    ] = None,
    http_host: Annotated[
        str | None,
        _opt(
            "SUPAWORKER_HTTP_HOST",
            "Address for --http-port (127.0.0.1; 0.0.0.0 serves every interface)",
        ),
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option(help="Read settings from this .env file (default ./.env)")
    ] = None,
) -> None:
    """Register, claim jobs, run the handler, report outcomes, until stopped.

    Reads SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) from the
    environment or .env. Never needs database credentials.
    """
    given: dict[str, Any] = {
        "handler": handler,
        "handler_command": handler_command,
        "handler_url": handler_url,
        "worker_id": worker_id,
        "concurrency": concurrency,
        "queues": queue or None,
        "capabilities": capabilities,
        "poll_interval": poll_interval,
        "heartbeat_interval": heartbeat_interval,
        "job_timeout": job_timeout,
        "shutdown_timeout": shutdown_timeout,
        "executor": executor,
        "realtime": realtime,
        "burst": burst or None,
        "log_format": log_format,
        "http_port": http_port,
        "http_host": http_host,
    }
    sys.path.insert(0, ".")  # handlers live in the project the worker is started from
    try:
        settings = settings_from_cli(given, env_file)
        settings.require_connection()
        loaded = handler_from(settings)
    except ConfigurationError as exc:
        raise fail(str(exc)) from None
    logs.configure(settings.log_format, settings.log_level)
    try:
        code = asyncio.run(_serve(settings, loaded))
    except ConfigurationError as exc:  # the database's schema is too old
        raise fail(str(exc)) from None
    raise typer.Exit(code)


def settings_from_cli(given: dict[str, Any], env_file: Path | None) -> WorkerSettings:
    """The one settings object: flags given on the command line win over the environment,
    which wins over the .env file (`--env-file`, default ./.env)."""
    if env_file is not None and not env_file.is_file():
        raise ConfigurationError(f"--env-file {env_file} does not exist")
    values = {k: v for k, v in given.items() if v is not None}
    try:
        return WorkerSettings(_env_file=env_file or ".env", **values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"invalid {where}: {first['msg']}") from None


async def _heartbeat_client(
    settings: WorkerSettings, metrics: WorkerMetrics | None
) -> AsyncQueueClient:
    """The heartbeat thread's own client (its own HTTP connections, on its own loop)."""
    client = await AsyncQueueClient.connect(settings.supabase_url, settings.service_key)
    if metrics is None:
        return client
    return AsyncQueueClient(InstrumentedTransport(client.transport, metrics))


# As long as the worker's own registration keeps trying an unreachable API.
SCHEMA_CHECK_SECONDS = 30.0


async def check_schema(
    queue: AsyncQueueClient, patience: float = SCHEMA_CHECK_SECONDS
) -> int | None:
    """Raise SchemaOutdated before any work against a database older than the package needs;
    EXIT_UNAVAILABLE when the API stays unreachable for `patience` seconds.

    A refused key or another error of the call is left to the worker's registration, which
    says what is wrong in its own words (exit 2).
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            version = await queue.schema_version()
            break
        except TransportError as exc:
            if time.monotonic() > deadline:
                log.error("cannot reach the queue: %s", exc, extra={"action": "register_failed"})
                return EXIT_UNAVAILABLE
            await asyncio.sleep(1)
        except QueueError:
            return None
    schema.require_version(version)
    return None


async def _serve(settings: WorkerSettings, handler: Handler) -> int:
    queue = await AsyncQueueClient.connect(settings.supabase_url, settings.service_key)
    handler_client = await HandlerClient.connect(settings.supabase_url, settings.service_key)
    supabase = handler_client.client
    metrics = None
    if settings.http_port is not None:
        metrics = WorkerMetrics()
        queue = AsyncQueueClient(InstrumentedTransport(queue.transport, metrics))
    wakeup = None
    if settings.realtime:
        from supaworker.worker.wakeup import RealtimeWakeup

        wakeup = RealtimeWakeup(settings.supabase_url, settings.service_key, settings)
    server = None
    # A handler that is an async context manager (--handler-command starts its child process
    # here) is entered around the whole run, before the worker registers.
    lifecycle = contextlib.AsyncExitStack()
    try:
        if isinstance(handler, contextlib.AbstractAsyncContextManager):
            try:
                await lifecycle.enter_async_context(handler)
            except ConfigurationError as exc:
                typer.echo(f"supaworker: error: {exc}", err=True)
                return EXIT_CONFIG
        # After the handler's own set-up: a handler that cannot start is a configuration
        # error (exit 2) whether or not the API answers.
        unavailable = await check_schema(queue)
        if unavailable is not None:
            return unavailable
        worker = Worker(
            queue,
            handler,
            settings,
            supabase=supabase,
            wakeup=wakeup,
            heartbeat_client=functools.partial(_heartbeat_client, settings, metrics),
        )
        if metrics is not None:
            worker.events.subscribe(JobCounter(metrics, settings.queues))
        if metrics is not None and settings.http_port is not None:
            server = WorkerHTTP(
                worker,
                queue,
                metrics,
                internal_api_key=settings.internal_api_key,
                host=settings.http_host,
                port=settings.http_port,
            )
            await server.start()
        return await worker.run()
    finally:
        if server is not None:
            await server.stop()
        await lifecycle.aclose()
        await queue.aclose()
        await handler_client.aclose()
