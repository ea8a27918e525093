"""RQ backend: plugq's Worker counters after work(), and the ``lease`` URL parameter."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rq")

from plugq import JobStatus, Queue, Worker
from plugq.exceptions import ConfigurationError
from plugq.testing import tasks

pytestmark = pytest.mark.redis


@pytest.fixture
def url(redis_server) -> str:
    redis_server.flushall()
    return redis_server.url + "/3"


@pytest.mark.parametrize("worker_class", ["fork", "simple", "spawn"])
def test_worker_counts_reflect_the_run(url, worker_class):
    q = Queue("counts", connection=url)
    for i in range(3):
        q.enqueue(tasks.add, i, i)
    for _ in range(2):
        q.enqueue(tasks.fail)
    w = Worker([q], worker_class=worker_class)
    assert w.work(burst=True)
    assert (w.successful_job_count, w.failed_job_count) == (3, 2)
    # A second run adds to the counts, as on the other backends.
    q.enqueue(tasks.add, 1, 1)
    w.work(burst=True)
    assert (w.successful_job_count, w.failed_job_count) == (4, 2)


def test_lease_must_be_seconds(redis_server):
    for bad in ("abc", "0", "-3", "0.5", "inf"):
        with pytest.raises(ConfigurationError, match="lease"):
            Queue("x", connection=f"{redis_server.url}/3?lease={bad}")


def test_simple_worker_keeps_a_long_job_alive_under_a_short_lease(url):
    """A job longer than the lease is not taken for abandoned while its worker lives."""
    lease_url = url + "?lease=1"
    q = Queue("longjob", connection=lease_url)
    job = q.enqueue(tasks.sleep, 3.5)
    w = Worker([q], worker_class="simple")
    runner = threading.Thread(target=w.work, kwargs={"burst": True})
    runner.start()
    try:
        end = time.monotonic() + 30
        while runner.is_alive() and time.monotonic() < end:
            q.backend.maintenance()  # what another worker's cleanup would do
            assert job.get_status() in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.FINISHED)
            time.sleep(0.2)
    finally:
        runner.join(30)
    assert job.get_status() == "finished"
    assert job.attempts == 1
    assert (w.successful_job_count, w.failed_job_count) == (1, 0)
