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
# Defence in depth: nothing that looks like a JWT or an sb_ key is ever written out.
_SECRET = re.compile(r"(eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}|sb_(secret|publishable)_[\w-]+)")


def redact(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


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
