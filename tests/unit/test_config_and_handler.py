"""Settings parsing and handler loading: the errors a user sees for bad input."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from supaworker import Job, JobContext
from supaworker.config import WORKER_CAPABILITY, WorkerSettings
from supaworker.exceptions import HandlerImportError
from supaworker.worker.handler import is_async, load_handler, wants_context


def test_capabilities_json_is_parsed_and_advertised_with_the_worker_id() -> None:
    s = WorkerSettings(capabilities='{"gpu": true}', worker_id="vps1")
    assert s.advertised_capabilities() == {"gpu": True, WORKER_CAPABILITY: "vps1"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{gpu: true}", "--capabilities is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_capabilities_say_what_to_fix(value: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        WorkerSettings(capabilities=value)
    assert message in str(info.value)


def test_queues_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPAWORKER_QUEUES", "ocr, thumbnails")
    assert WorkerSettings().queues == ["ocr", "thumbnails"]


def test_service_key_comes_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    monkeypatch.setenv("SUPABASE_SECRET_KEY", "sb_secret_x")
    settings = WorkerSettings()
    assert settings.service_key == "sb_secret_x"
    assert "sb_secret_x" not in repr(settings)  # never printed


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon", "must look like MODULE:FUNCTION"),
        ("no_such_module_xyz:f", "Cannot import module 'no_such_module_xyz'"),
        ("json:no_such_function", "has no attribute 'no_such_function'"),
        ("json:__doc__", "is not callable"),
    ],
)
def test_handler_import_errors(path: str, message: str) -> None:
    with pytest.raises(HandlerImportError) as info:
        load_handler(path)
    assert message in str(info.value)


def test_handler_signatures_are_recognised() -> None:
    def one(job: Job) -> None: ...
    def two(job: Job, ctx: JobContext) -> None: ...
    async def three(job: Job, ctx: JobContext) -> None: ...
    def star(*args: Any) -> None: ...

    assert (wants_context(one), wants_context(two), wants_context(star)) == (False, True, True)
    assert (is_async(one), is_async(three)) == (False, True)
    assert load_handler("tests.handlers:handle_sync") is not None


def test_log_lines_never_carry_keys_or_tokens() -> None:
    import json
    import logging

    from supaworker.logs import JsonFormatter, TextFormatter
    from supaworker_local.keys import service_role_key

    key = service_role_key("a-secret-that-is-at-least-32-characters-long")
    record = logging.makeLogRecord(
        {
            "msg": "calling with %s and sb_secret_N7UND0UgjKTVK-Uodkm0Hg",
            "args": (key,),
            "action": "test",
        }
    )
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert key not in line and "sb_secret_" not in line
        assert "[redacted]" in line
    assert json.loads(JsonFormatter().format(record))["action"] == "test"


def test_batch_settings_come_from_the_env_file_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Batch size and delay are WorkerSettings fields, so --env-file reaches them (they were
    read from ./.env by the worker itself, whatever file the CLI was given)."""
    monkeypatch.delenv("SUPAWORKER_COMPLETE_BATCH_SIZE", raising=False)
    monkeypatch.delenv("SUPAWORKER_COMPLETE_BATCH_DELAY", raising=False)
    env_file = tmp_path / "worker.env"
    env_file.write_text("SUPAWORKER_COMPLETE_BATCH_SIZE=7\nSUPAWORKER_COMPLETE_BATCH_DELAY=0.01\n")
    s = WorkerSettings(_env_file=env_file)  # type: ignore[call-arg]
    assert (s.complete_batch_size, s.complete_batch_delay) == (7, 0.01)
    with pytest.raises(ValidationError):
        WorkerSettings(complete_batch_size=1001)
