"""Kills and outages on the PostgreSQL backend: nothing lost, nothing run twice in one attempt.

The server-restart tests run on a cluster the test starts itself
(``postgres_cluster``): a server the tests did not start is never stopped.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from plugq import BackendUnavailableError, JobStatus, Queue, Retry
from plugq.testing import tasks
from plugq_postgres import PostgresStorage

from .conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def counts(storage: PostgresStorage, queue: str) -> dict[str, int]:
    return {s.value: storage.count_status(queue, s) for s in JobStatus}


def ran_lines(out: Path) -> dict[str, int]:
    lines: dict[str, int] = {}
    for f in out.iterdir():
        for line in f.read_text().split():
            lines[line] = lines.get(line, 0) + 1
    return lines


def check_every_job_ran(storage: PostgresStorage, out: Path, n: int, kills: int) -> None:
    """Every job finished; a job ran twice only if a worker died under its first attempt."""
    lines = ran_lines(out)
    rerun = 0
    for rec in storage.get_many([f"job-{i}" for i in range(n)]):
        assert rec is not None and rec.status is JobStatus.FINISHED
        ran = lines.get(rec.id, 0)
        assert ran >= 1, rec.id
        if rec.attempts == 1:
            assert ran == 1, f"{rec.id} ran {ran} times in one attempt"
        else:
            rerun += 1
            assert ran <= rec.attempts
    assert rerun <= kills


def test_sigkilled_workers_lose_no_job(postgres_url, tmp_path, procs):
    """1,000 jobs with retries; workers are SIGKILLed at random moments and replaced."""
    url = f"{postgres_url}&lease=1"
    out = tmp_path / "out"
    out.mkdir()
    storage = PostgresStorage(url)
    q = Queue("default", connection=storage)
    n = 1000
    q.enqueue_many([
        Queue.prepare_data(tasks.append_line, (str(out / f"{i % 50}.txt"), f"job-{i}"),
                           job_id=f"job-{i}", retry=Retry(max=5))
        for i in range(n)
    ])
    rng = random.Random(1234)
    workers = [procs.worker(url) for _ in range(3)]
    kills = 0

    def finished() -> bool:
        nonlocal kills
        c = counts(storage, "default")
        if c["finished"] + c["failed"] == n:
            return True
        if kills < 6 and rng.random() < 0.2:
            victim = rng.randrange(len(workers))
            os.killpg(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = procs.worker(url)
            kills += 1
        return False

    try:
        wait_for(finished, 240, "every job to end", every=0.1)
        final = counts(storage, "default")
        assert final["finished"] == n, final
        assert kills >= 3
        check_every_job_ran(storage, out, n, kills)
    finally:
        storage.close()


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_server_restart_mid_drain_loses_nothing(postgres_cluster, tmp_path, procs, how):
    """Workers and a producer ride out a restart (or a SIGKILL) of the server."""
    db = postgres_cluster.create_database()
    url = f"{db}?lease=2&reconnect_timeout=60"
    out = tmp_path / "out"
    out.mkdir()
    storage = PostgresStorage(url)
    q = Queue("default", connection=storage)
    n = 600
    q.enqueue_many([
        Queue.prepare_data(tasks.append_line, (str(out / f"{i % 20}.txt"), f"job-{i}"),
                           job_id=f"job-{i}", retry=Retry(max=5))
        for i in range(n // 2)
    ])
    workers = [procs.worker(url) for _ in range(2)]
    wait_for(lambda: counts(storage, "default")["finished"] >= 50, 60, "the workers to start")

    produced: list[str] = []
    failures: list[BaseException] = []

    def produce() -> None:
        # Enqueues straight through the outage: each call waits the server out.
        try:
            for i in range(n // 2, n):
                q.enqueue(tasks.append_line, str(out / f"{i % 20}.txt"), f"job-{i}",
                          job_id=f"job-{i}", retry=Retry(max=5))
                produced.append(f"job-{i}")
                time.sleep(0.002)
        except BaseException as exc:
            failures.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.2)
    if how == "restart":
        postgres_cluster.restart()
    else:
        postgres_cluster.crash()
        time.sleep(1.0)  # down for a while
        postgres_cluster.start()
    producer.join(120)
    assert not failures, failures
    assert len(produced) == n // 2
    try:
        wait_for(lambda: counts(storage, "default")["finished"] == n, 180, "every job to finish")
        assert all(w.poll() is None for w in workers), "a worker died with the server"
        check_every_job_ran(storage, out, n, kills=2 * 3)
    finally:
        storage.close()


def test_a_server_that_stays_away_is_a_clear_error(postgres_cluster):
    db = postgres_cluster.create_database()
    storage = PostgresStorage(f"{db}?reconnect_timeout=2&connect_timeout=1")
    q = Queue("away", connection=storage)
    q.enqueue(tasks.add, 1, 1)
    postgres_cluster.stop()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as err:
            q.enqueue(tasks.add, 2, 2)
        assert 1.5 <= time.monotonic() - started < 15
        assert "did not come back within 2 s" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        postgres_cluster.start()
    assert len(q) == 1  # and the storage works again once the server is back
    storage.close()


PRODUCER = textwrap.dedent("""
    import sys
    from plugq import Queue
    from plugq.testing import tasks
    q = Queue("batch", connection=sys.argv[1])
    datas = [Queue.prepare_data(tasks.add, (i, i)) for i in range(int(sys.argv[2]))]
    print("enqueueing", flush=True)
    q.enqueue_many(datas)
    print("done", flush=True)
""")


def test_producer_killed_mid_enqueue_many_is_all_or_nothing(postgres_url):
    storage = PostgresStorage(postgres_url)
    n = 20000
    rng = random.Random(7)
    outcomes = set()
    try:
        for attempt in range(6):
            before = storage.count_status("batch", JobStatus.QUEUED)
            proc = subprocess.Popen([sys.executable, "-c", PRODUCER, postgres_url, str(n)],
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "enqueueing"
            try:
                proc.wait(rng.uniform(0.0, 0.4))
            except subprocess.TimeoutExpired:
                proc.kill()
            proc.wait()
            # The server notices the dead client and rolls its transaction back.
            wait_for(lambda: not storage._run(lambda c: c.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state <> 'idle'").fetchone()),
                30, "the killed session to end")
            added = storage.count_status("batch", JobStatus.QUEUED) - before
            assert added in (0, n), f"attempt {attempt}: {added} of {n} jobs written"
            outcomes.add(added)
        print("outcomes", sorted(outcomes))
    finally:
        storage.close()
