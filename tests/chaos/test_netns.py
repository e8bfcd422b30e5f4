"""A worker host cut off from the network: the worker runs in a network namespace made by
the test, reaching the API through a veth link and a relay on the host side; the link is
dropped while the worker holds jobs and restored later. Its jobs must be rescued after the
horizon and run by another worker, it must find them gone when it returns, and no result
may be written twice.

Everything stays on this machine: the veth pair links two namespaces of one kernel, on a
private /30, and the relay forwards to the gateway on 127.0.0.1. Needs root and `ip netns`
(skipped otherwise). SUPAWORKER_NETNS_CUT_SECONDS (how long the link is down, 10).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from supaworker_local.config import StackConfig
from tests.chaos.analysis import completions_per_cycle
from tests.chaos.harness import Db, db_now
from tests.chaos.load import record
from tests.chaos.netns import HOST_ADDR, Relay, ip, start_in
from tests.chaos.settings import fast_rescue
from tests.conftest import StackUser
from tests.worker_fixtures import WorkerProcess, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.chaos]

CUT_SECONDS = float(os.environ.get("SUPAWORKER_NETNS_CUT_SECONDS", "10"))
HORIZON = 4.0


def _rows(db: Db, queue: str) -> list[tuple[object, ...]]:
    return db.execute(
        "select id, status, assigned_to, attempt from public.processing_queue where queue = %s",
        (queue,),
    ).fetchall()


@pytest.mark.timeout(300)
def test_a_worker_cut_off_from_the_network(
    netns: tuple[str, str],
    stack: StackConfig,
    stack_env: dict[str, str],
    admin_db: Db,
    make_user: Callable[..., StackUser],
    start_worker: Callable[..., WorkerProcess],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    namespace, host_if = netns
    queue, user = unique("netns"), make_user()
    with fast_rescue(stack, HORIZON, 0.5), Relay(HOST_ADDR, stack.api_port) as relay:
        url = f"http://{HOST_ADDR}:{relay.port}"
        cut_off = start_in(
            namespace, url, stack_env, tmp_path / "cut.log", "--queue", queue, "--concurrency", "4"
        )
        try:
            cut_off.wait_for_log('"action": "worker_registered"', timeout=30)
            docs = [user.create_document(admin_db) for _ in range(4)]
            for doc in docs:
                admin_db.execute(
                    'select public.enqueue_job(%s, 0, \'{"mode": "sleep", "seconds": 6}\', %s, 10)',
                    (doc, queue),
                )
            wait_for(
                lambda: sum(r[1] == "processing" for r in _rows(admin_db, queue)) == 4,
                20,
                "the cut-off worker to run all four jobs",
            )
            held = {str(r[0]) for r in _rows(admin_db, queue) if r[2] == cut_off.worker_id}
            assert len(held) == 4
            # Polling, not Realtime: a rescue is no insert, so a Realtime-connected idle
            # worker would find the rescued jobs at its 30 s safety poll (or pg_cron's
            # minute); this measures the reaper, not that (docs/reliability.md, left open).
            other = start_worker("--queue", queue, "--concurrency", "4", "--no-realtime")
            other.wait_for_log('"action": "worker_registered"', timeout=30)
            cut_at, cut_at_db = time.monotonic(), db_now(admin_db)
            ip("link", "set", host_if, "down")
            try:
                wait_for(
                    lambda: all(r[2] == other.worker_id for r in _rows(admin_db, queue)),
                    HORIZON + 20,
                    "the other worker to hold every rescued job",
                )
                rescued_after = time.monotonic() - cut_at
                time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))
            finally:
                ip("link", "set", host_if, "up")
            restored_at = time.monotonic()
            wait_for(
                lambda: all(r[1] == "completed" for r in _rows(admin_db, queue)), 60, "all done"
            )
            # Back on the network, the worker learns its jobs are gone (heartbeat 'lost', or
            # its late completion fenced out), and is still alive.
            cut_off.wait_for_log('"action": "job_lost"', timeout=40)
            found_gone_after = time.monotonic() - restored_at
            assert cut_off.proc.poll() is None
            assert other.stop() == 0
            assert cut_off.stop() == 0, cut_off.output()[-2000:]
        finally:
            if cut_off.proc.poll() is None:
                cut_off.proc.kill()
                cut_off.proc.wait(10)
    completions = completions_per_cycle(admin_db, queue)
    assert {job for job, _ in completions} == held
    assert set(completions.values()) == {1}  # no result written twice
    completed_by = {
        str(r[0]): str(r[1])
        for r in admin_db.execute(
            "select job_id, worker_id from public.job_events e join public.processing_queue q"
            " on q.id = e.job_id where q.queue = %s and e.event = 'completed'",
            (queue,),
        ).fetchall()
    }
    assert set(completed_by.values()) == {other.worker_id}
    rescues = admin_db.execute(
        "select count(*), extract(epoch from max(e.created_at) - %s)"
        " from public.job_events e join public.processing_queue q"
        " on q.id = e.job_id where q.queue = %s and e.worker_id = %s"
        " and e.event = 'retry_scheduled' and e.message like '%%stopped heartbeating'",
        (cut_at_db, queue, cut_off.worker_id),
    ).fetchone()
    assert rescues is not None and rescues[0] == 4
    record(
        stack,
        "netns_cut",
        {
            "dead_worker_horizon_s": HORIZON,
            "link_down_s": round(restored_at - cut_at, 1),
            "jobs_held_by_cut_worker": len(held),
            # The reaper runs inside claims and from pg_cron: an idle worker with Realtime
            # connected claims every 30 s, so the rescue waits for one of them.
            "cut_to_last_rescue_s": round(float(str(rescues[1])), 1),
            "cut_to_all_reclaimed_by_the_other_worker_s": round(rescued_after, 1),
            "restore_to_worker_knows_jobs_gone_s": round(found_gone_after, 1),
            "results_written_twice": 0,
            "late_outcomes_fenced": cut_off.output().count('"action": "job_lost"'),
        },
    )
