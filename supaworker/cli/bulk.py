"""`supaworker enqueue --from-file FILE`: one document per line, sent with `enqueue_jobs` in
calls of up to 10,000 (`QueueClient.enqueue_many`).

A line is a document id, or a JSON object {"user_document_id": ..., "priority": ...,
"payload": ..., "queue": ..., "max_attempts": ..., "run_at": ..., "timeout_seconds": ...,
"requires": ...} whose options override the command's. Blank lines and lines starting with
`#` are skipped. The database checks every element; its "p_jobs[i]" is turned back into the
file's line number here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from supaworker import rpc
from supaworker.exceptions import RpcError
from supaworker.rpc import EnqueueOptions

_INDEX = re.compile(r"^p_jobs\[(\d+)\]: ")


class FileError(ValueError):
    """A line the command cannot turn into a document (before anything is sent)."""


@dataclass(frozen=True)
class Lines:
    items: list[rpc.BulkItem]
    numbers: list[int]  # the file's line number of each item


def read(path: Path) -> Lines:
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from None
    return parse(text.splitlines(), str(path))


def parse(lines: Iterable[str], name: str) -> Lines:
    items: list[rpc.BulkItem] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        items.append(_item(line, f"{name}:{number}"))
        numbers.append(number)
    return Lines(items, numbers)


def _item(line: str, where: str) -> rpc.BulkItem:
    if not line.startswith("{"):
        try:
            return uuid.UUID(line)
        except ValueError:
            raise FileError(f"{where}: not a document id or a JSON object: {line[:80]}") from None
    try:
        value: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FileError(f"{where}: not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict) or "user_document_id" not in value:
        raise FileError(f'{where}: a JSON line needs "user_document_id"')
    options = {k: v for k, v in value.items() if k != "user_document_id"}
    if isinstance(options.get("run_at"), str):
        try:
            options["run_at"] = datetime.fromisoformat(options["run_at"])
        except ValueError:
            raise FileError(f"{where}: run_at is not an ISO 8601 timestamp") from None
    return (str(value["user_document_id"]), cast(EnqueueOptions, options))


def where_in_file(exc: RpcError, lines: Lines, name: str, offset: int = 0) -> str:
    """The refusal's message with its p_jobs index turned into the file's line."""
    message = str(exc)
    match = _INDEX.match(message)
    if match is None:
        return message
    index = offset + int(match.group(1))
    if index >= len(lines.numbers):
        return message
    return f"{name}:{lines.numbers[index]}: {message[match.end() :]}"
