"""The TypeScript client (clients/js): typechecked, its generated copies in sync, and its
Node tests (clients/js/test/, `node --test`) passing against the test stack with two fresh
users. The same client under Deno: tests/functions/test_deno_integration.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable

import psycopg
import pytest

from supaworker.client import QueueClient
from supaworker_local.config import StackConfig
from tests.client_js.conftest import TSC
from tests.conftest import ROOT, StackUser

Admin = psycopg.Connection[tuple[object, ...]]


def test_typecheck(node: str) -> None:
    result = subprocess.run(
        [str(TSC), "-p", "clients/js", "--noEmit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_copies_are_in_sync(node: str) -> None:
    """supaworker/supabase_functions/_supaworker/supaworker/ and examples/*/supaworker.js are what
    `node clients/js/scripts/sync.mjs` writes from clients/js/src."""
    result = subprocess.run(
        [node, "clients/js/scripts/sync.mjs", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.stack
@pytest.mark.timeout(600)
def test_node_tests_pass(
    node: str,
    js_client_built: None,
    stack: StackConfig,
    make_user: Callable[..., StackUser],
    queue: QueueClient,
    admin_db: Admin,
    unique: Callable[[str], str],
) -> None:
    # Jobs without an owner, as an app's own user_documents with a nullable owner makes
    # (watch.test.mjs follows them by polling: no topic carries them), each in its own queue.
    ownerless = []
    for n in range(2):
        name = unique(f"node-ownerless-{n}")
        job = queue.enqueue(make_user().create_document(admin_db), queue=name)
        admin_db.execute(
            "update public.processing_queue set user_id = null where id = %s", (job.id,)
        )
        ownerless.append({"id": str(job.id), "queue": name})
    env = {
        **os.environ,
        "SUPABASE_URL": stack.api_url,
        "SUPABASE_ANON_KEY": stack.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
        "SUPAWORKER_TEST_USER_TOKEN": make_user().token,
        "SUPAWORKER_TEST_OTHER_USER_TOKEN": make_user().token,
        "SUPAWORKER_TEST_OWNERLESS_JOBS": json.dumps(ownerless),
        "NO_COLOR": "1",
    }
    # The files by name: given a folder, Node 20 also runs every other .mjs under a `test`
    # folder (the helpers and the handler fixture, which would wait on stdin forever).
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "clients/js/test").glob("*.test.mjs"))
    assert files
    result = subprocess.run(
        # Node 20 has WebSocket (supabase-js's Realtime) behind this flag; later ones by
        # default. --test-force-exit: realtime-js's disconnect() leaves a 10 s timer (phoenix
        # waits that long for the socket's close), which would idle every file for 10 s.
        [
            node,
            "--experimental-websocket",
            "--no-warnings",
            "--test",
            "--test-force-exit",
            *files,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    counts = dict(re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", output, re.MULTILINE))
    assert int(counts["pass"]) > 0, output
    assert (counts["fail"], counts["skipped"], counts["cancelled"]) == ("0", "0", "0"), output
