"""Crashes, kills and broken files on the SQLite backend: nothing lost, clear errors."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plugq import JobStatus, Queue, Retry
from plugq.exceptions import BackendUnavailableError
from plugq.testing import tasks
from plugq_sqlite import SqliteStorage

from .conftest import wait_for

pytestmark = pytest.mark.slow


def counts(backend: SqliteStorage, queue: str) -> dict[str, int]:
    return {s.value: backend.count_status(queue, s) for s in JobStatus}


def test_sigkilled_workers_lose_no_job(tmp_path, procs):
    """2,000 jobs with retries; workers are SIGKILLed at random moments and replaced."""
    url = f"sqlite:///{tmp_path / 'kill.db'}?lease=1"
    out = tmp_path / "out"
    out.mkdir()
    backend = SqliteStorage(url)
    q = Queue("default", connection=backend)
    n = 2000
    jobs = q.enqueue_many([
        Queue.prepare_data(tasks.append_line, (str(out / f"{i % 50}.txt"), f"job-{i}"),
                           job_id=f"job-{i}", retry=Retry(max=5))
        for i in range(n)
    ])
    assert len(jobs) == n
    rng = random.Random(1234)
    workers = [procs.worker(url) for _ in range(3)]
    kills = 0

    def finished() -> bool:
        nonlocal kills
        c = counts(backend, "default")
        if c["finished"] + c["failed"] == n:
            return True
        if kills < 8 and rng.random() < 0.15:
            victim = rng.randrange(len(workers))
            os.killpg(workers[victim].pid, signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = procs.worker(url)
            kills += 1
        return False

    wait_for(finished, 240, "every job to end", every=0.1)
    final = counts(backend, "default")
    assert final["finished"] == n, final
    assert final["started"] == 0 and final["queued"] == 0 and final["failed"] == 0
    assert kills >= 3

    lines: dict[str, int] = {}
    for f in out.iterdir():
        for line in f.read_text().split():
            lines[line] = lines.get(line, 0) + 1
    records = backend.get_many([f"job-{i}" for i in range(n)])
    rerun = 0
    for rec in records:
        assert rec is not None and rec.status is JobStatus.FINISHED
        ran = lines.get(rec.id, 0)
        assert ran >= 1, rec.id
        if rec.attempts == 1:
            assert ran == 1, f"{rec.id} ran {ran} times in one attempt"
        else:
            # Only a job whose worker died under it runs again; the abandoned
            # attempt may or may not have written its line before the kill.
            rerun += 1
            assert ran <= rec.attempts
            assert "abandoned" in (rec.exc_info or "") or rec.exc_info is None
    assert rerun <= kills


def test_supervisor_replaces_killed_children(tmp_path, procs):
    url = f"sqlite:///{tmp_path / 'sup.db'}?lease=1"
    backend = SqliteStorage(url)
    q = Queue("default", connection=backend)
    n = 300
    q.enqueue_many([Queue.prepare_data(tasks.sleep, (0.02,), retry=Retry(max=3)) for _ in range(n)])
    supervisor = procs.worker(url, "--concurrency", "3")
    first = wait_for(
        lambda: {w.pid for w in backend.list_workers()} if len(backend.list_workers()) == 3 else None,
        60, "three worker children")
    assert supervisor.pid not in first
    for pid in list(first)[:2]:
        os.kill(pid, signal.SIGKILL)
    replaced = wait_for(
        lambda: (pids := {w.pid for w in backend.list_workers() if w.pid not in first})
        and len(pids) >= 2 and pids,
        60, "two replacement children",
    )
    assert len(replaced) >= 2
    wait_for(lambda: counts(backend, "default")["finished"] == n, 180, "all jobs finished")
    c = counts(backend, "default")
    assert c["started"] == 0 and c["failed"] == 0 and c["queued"] == 0
    assert supervisor.poll() is None
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0


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


def test_producer_killed_mid_enqueue_many_is_all_or_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    backend = SqliteStorage(url)
    n = 20000
    rng = random.Random(7)
    for attempt in range(6):
        before = backend.count_status("batch", JobStatus.QUEUED)
        proc = subprocess.Popen([sys.executable, "-c", PRODUCER, url, str(n)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "enqueueing"
        # Kill somewhere between "about to write" and "written".
        try:
            proc.wait(rng.uniform(0.0, 0.25))
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.wait()
        added = backend.count_status("batch", JobStatus.QUEUED) - before
        assert added in (0, n), f"attempt {attempt}: {added} of {n} jobs written"
    # Integrity of the file after the kills.
    with sqlite3.connect(tmp_path / "batch.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_garbage_file_gives_clear_error_and_stays_untouched(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(os.urandom(8192))
    before = _digest(path)
    with pytest.raises(BackendUnavailableError) as err:
        Queue("x", connection=SqliteStorage(f"sqlite:///{path}")).enqueue(tasks.add, 1, 1)
    assert str(path) in str(err.value)
    assert _digest(path) == before


def test_disk_full_gives_clear_error_and_keeps_data(tmp_path):
    path = tmp_path / "full.db"
    backend = SqliteStorage(f"sqlite:///{path}")
    q = Queue("full", connection=backend)
    kept = q.enqueue(tasks.add, 1, 2)
    # Cap the file at its current size: the next growth is SQLITE_FULL, which is
    # what a full disk returns.
    conn = backend._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(BackendUnavailableError, match="full"):
        q.enqueue_many([Queue.prepare_data(tasks.echo, ("x" * 4000,)) for _ in range(500)])
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert q.get_job_ids() == [kept.id]
    assert q.fetch_job(kept.id).args == (1, 2)


def test_read_only_file_gives_clear_error_and_keeps_data(tmp_path):
    path = tmp_path / "ro.db"
    backend = SqliteStorage(f"sqlite:///{path}")
    q = Queue("ro", connection=backend)
    kept = q.enqueue(tasks.add, 1, 2)
    backend.close()
    before = _digest(path)
    ro = SqliteStorage(f"sqlite:///{path}?mode=ro")
    q_ro = Queue("ro", connection=ro)
    assert q_ro.get_job_ids() == [kept.id]
    with pytest.raises(BackendUnavailableError, match=r"read-only|readonly"):
        q_ro.enqueue(tasks.add, 3, 4)
    ro.close()
    assert _digest(path) == before
