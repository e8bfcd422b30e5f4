"""`supaworker demo --handler node` (issue 17): the example handler's JavaScript twin
(examples/document_processing/handler.mjs, in the wheel as supaworker_local/examples/) gives
the Python handler's results, and the demo's workers run it as a `--handler-command` child
against the real stack. The whole demo with the Python handler: tests/stack/test_dev_stack.py;
the file in the wheel: tests/install/test_plain_install.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from supaworker_local.examples.handler import analyse, extract_text

from supaworker import QueueClient
from supaworker.models import JobStatus
from supaworker_local import demo
from tests.conftest import StackUser
from tests.external.test_command_handler import log_records
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="needs node")

# Inputs beyond the samples, for the parts the samples do not reach: character references
# (doubly escaped too), nested skipped elements, quoted CSV cells over lines, code fences,
# runs of sentence ends, a word count whose reading time is an exact half (round half even).
EDGE_CASES = {
    "x.html": "<p>a &amp;lt; b&nbsp;c &#39;d&#x27;</p><head><style>x</style>t</head>Hi. Yo!! ..."
    "<!-- hidden --><script>if (a < b) {}</script><li>end",
    "y.csv": 'h,i\n"a ""q"" b",c\r\n"multi\nline",d\n',
    "z.md": "# Title\n```\ncode block\n```\n[link](x) - *item* > quote",
    "e.txt": " ".join(["word"] * 23) + ". And? Then...",
    "nothing.txt": "?!",
}


def python_result(name: str, content: str) -> dict[str, object]:
    return {"document": name, **analyse(extract_text(name, content))}


def test_the_node_handler_computes_what_the_python_handler_computes() -> None:
    inputs = [*demo.sample_documents(), *EDGE_CASES.items()]
    script = (
        f"import {{ analyse, extractText }} from {json.dumps(str(demo.node_handler_file()))};\n"
        'import { readFileSync } from "node:fs";\n'
        'const inputs = JSON.parse(readFileSync(0, "utf8"));\n'
        "console.log(JSON.stringify(inputs.map(([n, c]) => analyse(extractText(n, c)))));\n"
    )
    node = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert node.returncode == 0, node.stderr
    got = json.loads(node.stdout)
    assert len(got) == len(inputs) == 36 + len(EDGE_CASES)
    for (name, content), result in zip(inputs, got, strict=True):
        assert result == analyse(extract_text(name, content)), name


@pytest.mark.stack
def test_the_demos_workers_complete_the_samples_with_the_node_handler(
    queue: QueueClient,
    start_worker: Callable[..., WorkerProcess],
    admin_db: psycopg.Connection[tuple[object, ...]],
    make_user: Callable[..., StackUser],
    unique: Callable[[str], str],
) -> None:
    """The demo's worker part: its `--handler-command` (demo.handler_args), the sample
    documents of a fresh user, one set up to fail its first attempt, on a queue of its own."""
    user = make_user()
    name = unique("demo-node")
    expected = {}
    jobs = []
    for index, (doc_name, content) in enumerate(demo.sample_documents()):
        doc = user.create_document(admin_db, doc_name, content)
        payload = {"simulate_transient_failure": True} if index == 3 else {}
        jobs.append(queue.enqueue(doc, queue=name, payload=payload))
        expected[jobs[-1].id] = python_result(doc_name, content)
    worker = start_worker(
        *demo.handler_args(demo.DemoHandler.node),
        "--queue",
        name,
        "--concurrency",
        "3",
        handler=None,
    )
    try:
        wait_for(
            lambda: all(queue.get(j.id).status.is_finished for j in jobs),
            90,
            "the demo's jobs to finish",
        )
    finally:
        assert worker.stop() == 0, worker.output()[-3000:]
    rows = [queue.get(j.id) for j in jobs]
    assert {r.status for r in rows} == {JobStatus.COMPLETED}, worker.output()[-3000:]
    node_version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for row in rows:
        # The Node handler's result: the Python handler's statistics, and which runtime ran.
        assert row.result == {**expected[row.id], "runtime": f"node {node_version}"}
    assert sorted(r.retry_count for r in rows)[-2:] == [0, 1]  # the one simulated failure
    (started,) = log_records(worker, "handler_started")
    assert str(demo.node_handler_file()) in started["message"]


def test_the_demo_refuses_the_node_handler_without_node(tmp_path: Path) -> None:
    """One line, exit 2, before any stack comes up (`node` not on PATH)."""
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    result = subprocess.run(
        [sys.executable, "-m", "supaworker.cli.main", "demo", "--handler", "node"],
        cwd=tmp_path,
        env={**env, "SUPAWORKER_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "supaworker: error: --handler node needs Node.js: `node` is not on PATH"
    ]
    assert not (tmp_path / "state").exists()
