"""Public API details beyond the conformance suite (memory backend)."""

from __future__ import annotations

import threading
import uuid

import pytest

import plugq
from plugq import Job, JobStatus, ManualClock, Queue, Retry, Worker, get_current_job, job
from plugq.testing import tasks
from plugq.testing.conformance import wait_until
from plugq_memory import MemoryStorage


@pytest.fixture
def backend():
    return MemoryStorage(f"memory://api-{uuid.uuid4().hex}", clock=ManualClock())


def test_job_decorator_delay(backend):
    q = Queue("deco", connection=backend)
    delayed = job(q, timeout=30, result_ttl=-1)(tasks.add)
    j = delayed.delay(3, 4)
    assert j.origin == "deco" and j.timeout == 30 and j.result_ttl == -1
    assert j.func_name == "plugq.testing.tasks.add"
    Worker([q]).work(burst=True)
    assert j.result == 7


def test_job_decorator_by_queue_name_and_per_call_override(backend):
    delayed = job("deco2", connection=backend, retry=Retry(max=2))(tasks.add)
    j = delayed.delay(1, 1, retry=Retry(max=5))
    assert j.origin == "deco2" and j.retries_left == 5


def test_get_current_job_outside_a_job_is_none():
    assert get_current_job() is None


def test_fetch_many_and_exists(backend):
    q = Queue("many", connection=backend)
    a = q.enqueue(tasks.add, 1, 1)
    found = Job.fetch_many([a.id, "missing"], connection=backend)
    assert found[0] is not None and found[0].id == a.id and found[1] is None
    assert Job.exists(a.id, connection=backend)
    assert not Job.exists("missing", connection=backend)


def test_queue_remove(backend):
    q = Queue("rm", connection=backend)
    a = q.enqueue(tasks.add, 1, 1)
    b = q.enqueue(tasks.add, 2, 2)
    q.remove(a)
    assert q.get_job_ids() == [b.id]


def test_worker_refuses_queues_on_two_backends(backend):
    other = MemoryStorage(f"memory://other-{uuid.uuid4().hex}")
    with pytest.raises(ValueError, match="one worker serves one backend"):
        Worker([Queue("a", connection=backend), Queue("b", connection=other)])


def test_worker_name_must_be_unique_while_alive(backend, tmp_path):
    q = Queue("uniq", connection=backend)
    started, release = tmp_path / "started", tmp_path / "release"
    q.enqueue(tasks.touch_then_wait, str(started), str(release))
    first = Worker([q], name="dup")
    t = threading.Thread(target=first.work, kwargs={"burst": True})
    t.start()
    try:
        wait_until(started.exists, message="the first worker's job to start")
        with pytest.raises(ValueError, match="active worker named 'dup'"):
            Worker([q], name="dup").work(burst=True)
    finally:
        release.touch()
        t.join(10)


def test_status_is_str_enum(backend):
    q = Queue("s", connection=backend)
    j = q.enqueue(tasks.add, 1, 1)
    assert j.get_status() == "queued"
    assert f"{j.get_status()}" == "queued"
    assert JobStatus("finished") is JobStatus.FINISHED


def test_same_url_same_backend():
    url = f"memory://same-{uuid.uuid4().hex}"
    assert plugq.connect(url) is plugq.connect(url)
    assert Queue(connection=url).backend is Queue("other", connection=url).backend


def test_stopped_worker_request(backend):
    q = Queue("stop", connection=backend)
    for i in range(3):
        q.enqueue(tasks.add, i, i)
    w = Worker([q])
    w.request_stop()
    # A stop requested before work() starts is cleared: work() runs normally.
    assert w.work(burst=True) is True
    assert len(q) == 0
