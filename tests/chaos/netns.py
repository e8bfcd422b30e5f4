"""A worker host on a network of its own (tests/chaos/test_netns.py,
test_flow_control_chaos.py): a network namespace with a veth link to the host, a relay from
the host end to the gateway on 127.0.0.1, and a worker started inside the namespace.
Everything stays on this machine: the veth pair links two namespaces of one kernel, on a
private /30. Needs root and `ip netns` (the `netns` fixture, tests/chaos/conftest.py, skips
otherwise)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from tests.conftest import ROOT
from tests.worker_fixtures import WorkerProcess

HOST_ADDR, NS_ADDR = "10.208.19.1", "10.208.19.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Relay:
    """host_addr:port -> 127.0.0.1:target, byte for byte (HTTP and Realtime's websocket)."""

    def __init__(self, host: str, target: int) -> None:
        self.host, self.target = host, target
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        # Let every open relay end inside the loop, not at interpreter exit.
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def start_in(namespace: str, url: str, env: dict[str, str], log: Path, *args: str) -> WorkerProcess:
    worker_id = f"w-ns-{uuid.uuid4().hex[:6]}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", namespace, sys.executable, "-m", "supaworker.cli.main"),
                *("run", "--handler", "tests.handlers:handle", "--worker-id", worker_id),
                *("--heartbeat-interval", "0.5", "--poll-interval", "0.3", *args),
            ],
            cwd=ROOT,
            env={**os.environ, **env, "SUPABASE_URL": url, "SUPAWORKER_LOG_FORMAT": "json"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(worker_id, proc, log)
