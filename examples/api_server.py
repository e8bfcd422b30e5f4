"""The design's processing route, done the queue way: answer at once, process elsewhere.

Before: `POST /documents/<id>/process` parsed the document inside the request, tying up the
API server. Now it enqueues the document and returns `{"success": true, "status": "queued"}`;
a `supaworker run` process on another VPS does the work.

Run:  eval "$(supaworker dev env)"; python examples/api_server.py --port 8080
Then: curl -X POST localhost:8080/documents/<document-uuid>/process
      curl localhost:8080/jobs/<job-uuid>
"""

from __future__ import annotations

import argparse
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from supaworker import NotFound, PermissionDenied, QueueClient, QueueError
from supaworker.exceptions import InvalidArgument, PayloadTooLarge

PROCESS = re.compile(r"^/documents/([0-9a-fA-F-]{36})/process$")
JOB = re.compile(r"^/jobs/([0-9a-fA-F-]{36})$")
queue: QueueClient  # one client for the server: it is thread-safe and keeps connections open


class Routes(BaseHTTPRequestHandler):
    def _send(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        match = PROCESS.match(self.path)
        if not match:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
        length = int(self.headers.get("Content-Length") or 0)
        options = json.loads(self.rfile.read(length) or b"{}") if length else {}
        try:
            job = queue.enqueue(match.group(1), priority=int(options.get("priority", 0)))
        except NotFound as exc:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "not_found", "message": str(exc)})
        except (InvalidArgument, PayloadTooLarge) as exc:
            return self._send(HTTPStatus.BAD_REQUEST, {"error": "invalid", "message": str(exc)})
        except PermissionDenied as exc:
            return self._send(HTTPStatus.FORBIDDEN, {"error": "forbidden", "message": str(exc)})
        except QueueError as exc:
            return self._send(
                HTTPStatus.SERVICE_UNAVAILABLE, {"error": "queue_unavailable", "message": str(exc)}
            )
        self._send(
            HTTPStatus.ACCEPTED, {"success": True, "status": "queued", "job_id": str(job.id)}
        )

    def do_GET(self) -> None:
        match = JOB.match(self.path)
        if not match:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
        try:
            job = queue.get(match.group(1))
        except NotFound:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "not_found"})
        self._send(
            HTTPStatus.OK,
            job.model_dump(
                mode="json",
                include={
                    "id",
                    "status",
                    "progress_percent",
                    "progress_message",
                    "result",
                    "error_message",
                },
            ),
        )

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return


def main() -> None:
    global queue
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    queue = QueueClient.from_env()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Routes)
    print(f"listening on http://127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        queue.close()


if __name__ == "__main__":
    main()
