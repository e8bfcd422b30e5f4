"""Log formatting for the CLI: human text or one JSON object per line for log shippers.

Library code only calls `logging.getLogger(__name__)` with `extra={"action": ...}`; this
module is used by the CLI alone, which is the only place that configures handlers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; everything else came in through `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Defence in depth: common secret shapes are never written out, in logs nor in a job's error
# texts (the owner's error_message and the operators' job_error_details alike):
_SECRET = re.compile(
    r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}"  # a JWT (Supabase keys, signed URLs' tokens)
    r"|sb_(?:secret|publishable)_[\w-]+"  # Supabase API keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.S,
)
# The secret part only, so the error keeps saying where: scheme://user:[redacted]@host.
_URL_PASSWORD = re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)", re.I)
# key=value and key: value pairs whose key names a secret (password=..., "token": "...",
# Authorization: Bearer ..., aws_secret_access_key = ...).
_SECRET_PAIR = re.compile(
    r"(?P<keep>\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|credential|authorization)[\w-]*[\"']?\s*[=:]\s*[\"']?"
    r"(?:bearer\s+|basic\s+)?)[^\s\"'&,;]+",
    re.I,
)


def redact(text: str) -> str:
    text = _SECRET.sub("[redacted]", text)
    text = _URL_PASSWORD.sub(r"\g<keep>[redacted]", text)
    return _SECRET_PAIR.sub(r"\g<keep>[redacted]", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        body.update({k: redact(v) if isinstance(v, str) else v for k, v in _extras(record).items()})
        if record.exc_info:
            body["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        action = getattr(record, "action", "")
        line = f"{when} {record.levelname:<7} {redact(record.getMessage())}"
        if action:
            line += f"  [{action}]"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO, with URLs; keep it for debugging only.
    for noisy in ("httpx", "httpcore", "hpack", "websockets", "realtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
