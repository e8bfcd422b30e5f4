"""Worker settings: flags, `SUPAWORKER_*` environment variables or a `.env` file."""

from __future__ import annotations

import json
import socket
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from supaworker.exceptions import ConfigurationError

# Every worker offers this capability with its own id, so a job can be routed to exactly one
# worker (the HTTP dispatch mode uses it).
WORKER_CAPABILITY = "supaworker.worker_id"


class WorkerSettings(BaseSettings):
    """Everything `supaworker run` needs. Durations are seconds (fractions allowed)."""

    model_config = SettingsConfigDict(
        env_prefix="SUPAWORKER_", env_file=".env", extra="ignore", populate_by_name=True
    )

    supabase_url: str = Field(
        default="", validation_alias=AliasChoices("SUPABASE_URL", "supabase_url")
    )
    service_key: str = Field(
        default="",
        repr=False,
        validation_alias=AliasChoices(
            "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY", "service_key"
        ),
    )
    handler: str = ""
    # A handler outside Python (worker/command_handler.py, worker/url_handler.py): exactly
    # one of handler, handler_command and handler_url.
    handler_command: str | None = None
    handler_url: str | None = None
    # Sent as `Authorization: Bearer ...` to handler_url; never logged.
    handler_token: SecretStr | None = None
    # Seconds a --handler-command child has to answer a cancel before it is killed (and
    # restarted); its other jobs in flight fail, retryable.
    handler_cancel_grace: float = Field(default=5.0, gt=0)
    worker_id: str = Field(default_factory=socket.gethostname)
    worker_name: str | None = None
    concurrency: int = Field(default=1, ge=1, le=1000)
    # NoDecode: the variable is a comma-separated list, not JSON (SUPAWORKER_QUEUES=ocr,pdf).
    queues: Annotated[list[str], NoDecode] = Field(default_factory=list)
    capabilities: dict[str, Any] = Field(default_factory=dict)
    poll_interval: float = Field(default=5.0, gt=0)
    # While Realtime is connected the poll is only a safety net, so it can be slow.
    realtime_poll_interval: float = Field(default=30.0, gt=0)
    realtime: bool = True
    # Most seconds an idle worker waits after a Realtime insert event before it claims. 0: at
    # once (a SKIP LOCKED claim that finds nothing is cheap: ~0.5 ms in SQL). Fleets of many idle
    # workers on one queue may spread their claims with e.g. 0.05.
    wake_jitter: float = Field(default=0.0, ge=0, le=1.0)
    heartbeat_interval: float = Field(default=5.0, gt=0)
    # Most jobs held beyond `concurrency`, used only while jobs run shorter than a round trip
    # to the API (worker/prefetch.py). 0: never claim more than the free slots. How the default
    # was chosen: docs/benchmarks.md.
    prefetch: int = Field(default=128, ge=0, le=1000)
    # Successful completions written together, up to this many per call, which also claims
    # the next jobs (worker/batching.py). 0 or 1: each job written on its own.
    complete_batch_size: int = Field(default=100, ge=0, le=1000)
    # Extra seconds a lone completion waits for company before it is sent.
    complete_batch_delay: float = Field(default=0.0, ge=0, le=1.0)
    job_timeout: float | None = Field(default=None, gt=0)
    # A larger result fails its job (not retried): the row is read by frontends and sent by
    # Realtime, whose record limit is 1 MB. The same default as queue_settings'
    # max_payload_bytes.
    max_result_bytes: int = Field(default=262_144, ge=1, le=900_000)
    shutdown_timeout: float = Field(default=30.0, ge=0)
    executor: Literal["thread", "process"] = "thread"
    burst: bool = False
    http_port: int | None = Field(default=None, ge=1, le=65535)
    # Loopback by default: /metrics and /internal/process must not appear on a VPS's public
    # address unless the operator says so (a container sets 0.0.0.0: its network is private).
    http_host: str = "127.0.0.1"
    internal_api_key: str | None = Field(default=None, repr=False)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @field_validator("capabilities", mode="before")
    @classmethod
    def _parse_capabilities(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"--capabilities is not valid JSON: {exc.msg} (example: '{{\"ocr\": true}}')"
                ) from exc
            if not isinstance(value, dict):
                raise ValueError("--capabilities must be a JSON object, e.g. '{\"gpu\": true}'")
        return value

    @field_validator("queues", mode="before")
    @classmethod
    def _parse_queues(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    def advertised_capabilities(self) -> dict[str, Any]:
        return {**self.capabilities, WORKER_CAPABILITY: self.worker_id}

    def require_connection(self) -> None:
        if not self.supabase_url:
            raise ConfigurationError("SUPABASE_URL is not set (your project's API URL)")
        if not self.service_key:
            raise ConfigurationError(
                "No service key: set SUPABASE_SERVICE_ROLE_KEY or SUPABASE_SECRET_KEY"
            )
        given = [
            flag
            for flag, value in (
                ("--handler", self.handler),
                ("--handler-command", self.handler_command),
                ("--handler-url", self.handler_url),
            )
            if value
        ]
        if not given:
            raise ConfigurationError(
                "No handler: pass --handler MODULE:FUNCTION, --handler-command CMD or "
                "--handler-url URL"
            )
        if len(given) > 1:
            raise ConfigurationError(
                f"Give exactly one handler, got {' and '.join(given)} (flags or their "
                "SUPAWORKER_HANDLER* environment variables)"
            )
