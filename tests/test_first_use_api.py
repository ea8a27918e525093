"""What a newcomer trips over in the Python API (issue 19), each as a test."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest

from _cli_helpers import wait_until
from plugq import Job, ManualClock, Queue, Worker
from plugq.exceptions import NotSupportedError
from plugq.testing import tasks
from plugq_memory import MemoryBackend
from plugq_sqlite import SqliteBackend
from test_abandoned import claim_by_ghost


def test_fetch_dependencies_as_rq(walkthrough_url):
    q = Queue(connection=walkthrough_url)
    first = q.enqueue(tasks.add, 1, 2)
    second = q.enqueue(tasks.add, 3, 4)
    child = q.enqueue(tasks.add, 5, 6, depends_on=[first, second])
    assert [j.id for j in child.fetch_dependencies()] == [first.id, second.id]
    assert all(isinstance(j, Job) for j in child.fetch_dependencies())
    assert first.fetch_dependencies() == []
    second.delete()
    # RQ's: the dependencies that still exist.
    assert [j.id for j in Job.fetch(child.id, connection=walkthrough_url)
            .fetch_dependencies()] == [first.id]
    with pytest.raises(NotSupportedError):
        child.fetch_dependencies(watch=True)


def test_requeued_job_no_longer_shows_its_old_error(walkthrough_url, tmp_path):
    q = Queue(connection=walkthrough_url)
    job = q.enqueue(tasks.fail_until, str(tmp_path / "calls"), 1)
    Worker([q], connection=walkthrough_url).work(burst=True)
    assert job.get_status() == "failed" and "RuntimeError" in job.exc_info
    job.requeue()
    assert job.get_status() == "queued"
    assert job.exc_info is None
    Worker([q], connection=walkthrough_url).work(burst=True)
    assert job.get_status() == "finished" and job.exc_info is None


def test_running_requeued_job_shows_no_old_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'rerun.db'}"
    q = Queue(connection=url)
    later = tmp_path / "later"
    started, release = later / "started", tmp_path / "release"
    # The first run fails at once (the folder of `started` does not exist
    # yet); the rerun starts and waits, to be looked at while it runs.
    job = q.enqueue(tasks.touch_then_wait, str(started), str(release))
    Worker([q], connection=url).work(burst=True)
    assert job.get_status() == "failed" and "FileNotFoundError" in job.exc_info
    later.mkdir()
    job.requeue()
    t = threading.Thread(target=Worker([q], connection=url).work, kwargs={"burst": True})
    t.start()
    try:
        wait_until(started.exists, 30, "the rerun to start")
        assert job.get_status() == "started"
        assert job.exc_info is None
    finally:
        release.touch()
        t.join(30)
    assert job.get_status() == "finished"


@pytest.fixture(params=["memory", "sqlite"])
def leased(request, tmp_path):
    clock = ManualClock(start=1e9)
    if request.param == "memory":
        return MemoryBackend(f"memory://first-{uuid.uuid4().hex}?lease=5", clock=clock)
    return SqliteBackend(f"sqlite:///{tmp_path / 'first.db'}?lease=5", clock=clock)


def test_abandoned_job_of_an_unregistered_worker_does_not_say_never(leased):
    q = Queue("ab", connection=leased)
    job = q.enqueue(tasks.add, 1, 2)
    claim_by_ghost(leased, q)
    leased.unregister_worker("ghost")  # a worker gone at once: no "last seen" left
    leased.clock.advance(6)
    Worker([q], connection=leased).work(burst=True)
    assert job.get_status() == "failed"
    last = job.exc_info.strip().splitlines()[-1]
    assert "never" not in last
    assert "'ghost' is no longer registered" in last and "started at" in last


def test_worker_logs_the_traceback_of_a_failed_job(walkthrough_url, caplog):
    q = Queue(connection=walkthrough_url)
    q.enqueue(tasks.fail, "card declined")
    # 'simple': the job runs in this process, where caplog sees its log (the
    # CLI test in test_first_use_cli reads a forking Redis worker's stderr).
    with caplog.at_level(logging.INFO):
        Worker([q], connection=walkthrough_url, worker_class="simple").work(burst=True)
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "Traceback (most recent call last)" in text, caplog.text
    assert "ValueError: card declined" in text


def test_fork_worker_class_refused_on_memory_and_run_on_sqlite(tmp_path):
    url = f"memory://fork-{uuid.uuid4().hex}"
    q = Queue(connection=url)
    job = q.enqueue(tasks.add, 1, 2)
    with pytest.raises(NotSupportedError, match="worker_class='fork'"):
        Worker([q], connection=url, worker_class="fork").work(burst=True)
    assert job.get_status() == "queued"
    assert Worker([q], connection=url, worker_class="simple").work(burst=True)
    assert job.result == 3
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    q = Queue(connection=url)
    job = q.enqueue(tasks.add, 1, 2)
    assert Worker([q], connection=url, worker_class="fork").work(burst=True)
    assert job.result == 3
