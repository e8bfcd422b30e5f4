"""Fixtures to run `supaworker run` as a real subprocess against the local stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from supaworker import QueueClient
from supaworker.models import Job
from tests.conftest import ROOT, StackUser


@dataclass
class WorkerProcess:
    """A `supaworker run` subprocess. Its output goes to a file, never a pipe: a pipe that
    nobody drains fills up and blocks the worker on its next log line."""

    worker_id: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, *needles: str, count: int = 1, timeout: float = 20) -> None:
        """Wait until `count` log lines contain every needle (e.g. '"action": "x"')."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [ln for ln in self.output().splitlines() if all(n in ln for n in needles)]
            if len(lines) >= count:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"worker {self.worker_id}: no {count} log line(s) with {needles}"
            f"\n{self.output()[-3000:]}"
        )


@pytest.fixture()
def queue(stack_env: dict[str, str]) -> Iterator[QueueClient]:
    client = QueueClient.from_env(stack_env)
    yield client
    client.close()


@pytest.fixture()
def start_worker(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(
        *args: str,
        worker_id: str | None = None,
        env: dict[str, str] | None = None,
        handler: str | None = "tests.handlers:handle",
    ) -> WorkerProcess:
        """`handler=None`: the args name the handler (--handler-command, --handler-url)."""
        wid = worker_id or f"w-{uuid.uuid4().hex[:8]}"
        full_env = {**os.environ, **stack_env, "SUPAWORKER_LOG_FORMAT": "json", **(env or {})}
        full_env.pop("SUPABASE_SECRET_KEY", None)  # exercise the legacy service-role key
        log_path = tmp_path / f"{wid}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed right after
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supaworker.cli.main",
                "run",
                *(["--handler", handler] if handler is not None else []),
                "--worker-id",
                wid,
                "--heartbeat-interval",
                "0.5",
                "--poll-interval",
                "0.3",
                *args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        worker = WorkerProcess(wid, proc, log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)


@pytest.fixture()
def submit(
    queue: QueueClient,
    admin_db: psycopg.Connection[tuple[object, ...]],
    make_user: Callable[..., StackUser],
) -> Callable[..., list[Job]]:
    """Create documents for a fresh user and enqueue them on a queue of the test's own."""
    user = make_user()

    def submit(n: int = 1, *, queue_name: str, **kw: Any) -> list[Job]:
        docs = [user.create_document(admin_db) for _ in range(n)]
        return [queue.enqueue(doc, queue=queue_name, **kw) for doc in docs]

    return submit


def wait_for(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
