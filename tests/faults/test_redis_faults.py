"""Kills, restarts and outages on the Redis backend: nothing lost, nothing run twice unasked.

Workers are real ``plugq worker`` processes (rq's forking worker) started with
``?lease=SECONDS``, so a SIGKILLed worker's job is recovered within seconds
instead of rq's default monitoring interval + 60 s.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("rq")


from plugq import Job, JobStatus, Queue, Retry
from plugq.exceptions import BackendUnavailableError
from plugq.testing import tasks
from plugq.testing.redis_server import RedisServer, _free_port

from .conftest import wait_for

pytestmark = pytest.mark.redis


def counts(q: Queue) -> dict[str, int]:
    b = q.backend
    return {s.value: b.count(q.name, s) for s in JobStatus}


def lines_in(folder: Path) -> dict[str, int]:
    seen: dict[str, int] = {}
    for f in folder.iterdir():
        for line in f.read_text().split():
            seen[line] = seen.get(line, 0) + 1
    return seen


@pytest.fixture
def db_url(redis_server) -> str:
    redis_server.flushall()
    return redis_server.url + "/2"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (rq's work horses call setsid, so killpg misses them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill(proc) -> None:
    """SIGKILL a worker and its work horse at once, as if the machine died."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("retry", [True, False])
def test_lease_recovers_a_sigkilled_workers_job(db_url, procs, tmp_path, retry):
    url = db_url + "?lease=2"
    q = Queue("lease", connection=url)
    started, release = tmp_path / "started", tmp_path / "release"
    job = q.enqueue(tasks.touch_then_wait, str(started), str(release),
                    retry=Retry(max=1) if retry else None)
    victim = procs.worker(url, "lease")
    wait_for(started.exists, 30, "the job to start")
    others = [q.enqueue(tasks.add, i, i) for i in range(5)]
    kill(victim)
    killed_at = time.monotonic()
    started.unlink()
    release.touch()
    procs.worker(url, "lease")
    want = JobStatus.FINISHED if retry else JobStatus.FAILED
    wait_for(lambda: job.get_status() == want, 30, f"the abandoned job to be {want.value}")
    # rq's default would wait its monitoring interval + 60 s.
    assert time.monotonic() - killed_at < 15
    wait_for(lambda: all(o.get_status() == "finished" for o in others), 30, "the other jobs")
    assert [o.result for o in others] == [0, 2, 4, 6, 8]
    assert q.started_job_registry.count == 0
    if retry:
        assert started.exists()  # it ran again, on the second worker
        assert job.attempts == 2 and job.retries_left == 0
    else:
        assert "AbandonedJobError" in (job.exc_info or "")
        assert job.id in q.failed_job_registry.get_job_ids()
        q.failed_job_registry.requeue(job.id)
        wait_for(lambda: job.get_status() == "finished", 30, "the requeued job to finish")


@pytest.mark.slow
def test_sigkilled_workers_lose_no_job(db_url, procs, tmp_path):
    """2,000 jobs with retries; workers are SIGKILLed at random moments and replaced."""
    url = db_url + "?lease=3"
    out = tmp_path / "out"
    out.mkdir()
    q = Queue("default", connection=url)
    n = 2000
    jobs = q.enqueue_many([
        Queue.prepare_data(tasks.append_line, (str(out / f"{i % 50}.txt"), f"job-{i}"),
                           job_id=f"job-{i}", retry=Retry(max=5))
        for i in range(n)
    ])
    assert len(jobs) == n
    rng = random.Random(4321)
    workers = [procs.worker(url, "--worker-class", "fork") for _ in range(3)]
    kills = 0
    last_kill = time.monotonic()

    def done() -> bool:
        nonlocal kills, last_kill
        c = counts(q)
        # The end is when nothing is left to run: a job whose worker died just
        # after it finished may be running again (at least once), and counts
        # read during that rerun would see it both finished and started.
        if c["finished"] + c["failed"] == n and c["started"] == 0 and c["queued"] == 0:
            return True
        if kills < 8 and c["finished"] > 50 and time.monotonic() - last_kill > rng.uniform(0.2, 1.5):
            victim = rng.randrange(len(workers))
            kill(workers[victim])
            workers[victim] = procs.worker(url, "--worker-class", "fork")
            kills += 1
            last_kill = time.monotonic()
        return False

    wait_for(done, 90, "every job to end", every=0.1, state=lambda: counts(q))
    final = counts(q)
    assert final["finished"] == n, final
    assert final["started"] == 0 and final["queued"] == 0 and final["failed"] == 0
    assert kills >= 3

    lines = lines_in(out)
    records = q.backend.fetch_jobs([f"job-{i}" for i in range(n)])
    rerun = 0
    for rec in records:
        assert rec is not None and rec.status is JobStatus.FINISHED
        ran = lines.get(rec.id, 0)
        assert ran >= 1, rec.id
        if ran > 1:
            # Only a job whose worker died under it runs again.
            rerun += 1
            assert ran <= rec.attempts, f"{rec.id} ran {ran} times in {rec.attempts} attempts"
    assert rerun <= kills


@pytest.mark.slow
def test_redis_crash_with_aof_loses_no_job(aof_redis_server: RedisServer, procs, tmp_path):
    """kill -9 of an AOF (fsync always) Redis mid-run: workers reconnect, every job finishes."""
    url = aof_redis_server.url + "/0?lease=2"
    out = tmp_path / "out"
    out.mkdir()
    q = Queue("aof", connection=url)
    n = 400
    q.enqueue_many([
        Queue.prepare_data(tasks.append_line, (str(out / f"{i % 20}.txt"), f"job-{i}"),
                           job_id=f"job-{i}", retry=Retry(max=3))
        for i in range(n)
    ])
    for _ in range(2):
        procs.worker(url, "aof")
    wait_for(lambda: q.finished_job_registry.count > 50, 60, "the run to get going")
    aof_redis_server.crash()
    crashed = len(lines_in(out))
    aof_redis_server.start()
    wait_for(lambda: q.finished_job_registry.count == n, 90, "every job to finish after the crash")
    c = counts(q)
    assert c["started"] == 0 and c["queued"] == 0 and c["failed"] == 0, c
    lines = lines_in(out)
    assert sorted(lines) == sorted(f"job-{i}" for i in range(n))
    assert crashed < n  # the crash really happened mid-run
    # A job runs twice only if the crash cut it between its work and its bookkeeping.
    assert sum(1 for v in lines.values() if v > 1) <= 2


def test_unreachable_redis_raises_with_password_masked():
    url = f"redis://:hunter2@127.0.0.1:{_free_port()}/0"
    with pytest.raises(BackendUnavailableError) as info:
        Queue("down", connection=url).enqueue(tasks.add, 1, 2)
    text = str(info.value)
    assert "redis://:***@127.0.0.1" in text and "hunter2" not in text


def test_enqueue_while_down_then_batches_are_all_or_nothing(aof_redis_server: RedisServer):
    url = aof_redis_server.url + "/0"
    q = Queue("batch", connection=url)
    aof_redis_server.stop()
    with pytest.raises(BackendUnavailableError, match=r"Redis at redis://127\.0\.0\.1:\d+/0"):
        q.enqueue(tasks.add, 1, 2)
    with pytest.raises(BackendUnavailableError):
        q.enqueue_many([Queue.prepare_data(tasks.add, (i, i)) for i in range(10)])
    aof_redis_server.start()
    wait_for(lambda: _answers(q), 10, "the client to reconnect")
    assert len(q) == 0 and q.count == 0

    # The server is SIGKILLed while a big batch is being written: all or nothing.
    rng = random.Random(11)
    n = 5000
    for attempt in range(4):
        before = len(q)
        tag = uuid.uuid4().hex[:8]
        datas = [Queue.prepare_data(tasks.add, (i, i), job_id=f"{tag}-{i}") for i in range(n)]
        timer = threading.Timer(rng.uniform(0.0, 0.15), aof_redis_server.crash)
        timer.start()
        with contextlib.suppress(BackendUnavailableError):
            q.enqueue_many(datas)
        timer.join()
        aof_redis_server.start()
        wait_for(lambda: _answers(q), 10, "the client to reconnect")
        added = len(q) - before
        assert added in (0, n), f"attempt {attempt}: {added} of {n} jobs written"
        if added == 0:
            assert Job.exists(f"{tag}-0", connection=q.backend) is False


def _answers(q: Queue) -> bool:
    try:
        len(q)
        return True
    except BackendUnavailableError:
        return False


def _raw(url: str):
    import redis

    return redis.Redis.from_url(url.split("?", 1)[0])


def test_a_job_claimed_ahead_is_put_back_unrun_when_its_worker_dies(db_url, procs, tmp_path):
    """The worker stores A's outcome and claims B in the same round trip (claim ahead), then
    is SIGKILLed in A's on_success callback, before beginning B: B is put back and runs once,
    later, without an attempt or a retry spent on the claim that never ran it."""
    url = db_url + "?lease=2"
    q = Queue("ahead", connection=url)
    started, release, out = tmp_path / "started", tmp_path / "release", tmp_path / "out.txt"
    a = q.enqueue(tasks.add, 1, 2, on_success=tasks.touch_then_wait_callback,
                  meta={"started": str(started), "release": str(release)})
    b = q.enqueue(tasks.append_line, str(out), "b", retry=Retry(max=2))
    victim = procs.worker(url, "ahead")  # the default class, simple: it claims ahead
    wait_for(started.exists, 30, "A's on_success callback to hold the worker")
    assert a.get_status() == "finished"
    # B is taken by the worker (started, one attempt), marked as not begun.
    assert b.get_status() == "started" and b.attempts == 1
    assert _raw(db_url).hexists(f"rq:job:{b.id}", "plugq_ahead")
    kill(victim)
    release.touch()
    procs.worker(url, "ahead")
    wait_for(lambda: b.get_status() == "finished", 30, "B to run on the second worker")
    assert out.read_text().split() == ["b"]  # once
    assert b.attempts == 1 and b.retries_left == 2 and b.exc_info is None
    assert not _raw(db_url).hexists(f"rq:job:{b.id}", "plugq_ahead")
    assert q.started_job_registry.count == 0 and q.failed_job_registry.count == 0


def test_a_job_begun_after_its_claim_ahead_spends_its_attempt_when_its_worker_dies(
    db_url, procs, tmp_path
):
    """The other side: once the worker began B (claimed ahead), its death costs B an attempt,
    as for any claim, so a job that kills its worker cannot be put back unrun forever."""
    url = db_url + "?lease=2"
    q = Queue("ahead", connection=url)
    started, release = tmp_path / "started", tmp_path / "release"
    q.enqueue(tasks.add, 1, 2)
    b = q.enqueue(tasks.touch_then_wait, str(started), str(release), retry=Retry(max=1))
    victim = procs.worker(url, "ahead")
    wait_for(started.exists, 30, "B to begin")
    wait_for(lambda: not _raw(db_url).hexists(f"rq:job:{b.id}", "plugq_ahead"), 5,
             "the mark of B's claim ahead to go when B began")
    kill(victim)
    started.unlink()
    release.touch()
    procs.worker(url, "ahead")
    wait_for(lambda: b.get_status() == "finished", 30, "B to run again on the second worker")
    assert started.exists()
    assert b.attempts == 2 and b.retries_left == 0
