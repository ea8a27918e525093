"""Abandoned jobs on the storage backends: a worker that stops heartbeating.

The clock is a ManualClock, so "the lease ran out" is one call; the SQLite
crash test (tests/test_sqlite.py) and the fault suite do the same with real
processes and SIGKILL.
"""

from __future__ import annotations

import uuid

import pytest

from plugq import JobStatus, ManualClock, Queue, Retry, Worker
from plugq.storage import WorkerRecord
from plugq.testing import tasks
from plugq_memory import MemoryStorage
from plugq_sqlite import SqliteStorage


@pytest.fixture(params=["memory", "sqlite"])
def backend(request, tmp_path):
    clock = ManualClock(start=1e9)
    if request.param == "memory":
        return MemoryStorage(f"memory://abandon-{uuid.uuid4().hex}?lease=5", clock=clock)
    return SqliteStorage(f"sqlite:///{tmp_path / 'abandon.db'}?lease=5", clock=clock)


def claim_by_ghost(backend, queue: Queue) -> None:
    """A worker registers, claims the next job, then dies (never heartbeats again)."""
    now = backend.clock.now()
    backend.register_worker(WorkerRecord(name="ghost", queues=[queue.name], pid=999999,
                                         hostname="gone", birth=now, last_heartbeat=now))
    assert backend.claim([queue.name], "ghost", now) is not None


def test_abandoned_job_without_retry_fails_naming_the_cause(backend):
    q = Queue("ab", connection=backend)
    job = q.enqueue(tasks.add, 1, 2)
    other = q.enqueue(tasks.add, 3, 4)
    claim_by_ghost(backend, q)
    assert job.get_status() == "started"
    Worker([q], connection=backend).work(burst=True)  # lease not over: the job stays started
    assert job.get_status() == "started"
    assert other.get_status() == "finished"
    backend.clock.advance(6)
    Worker([q], connection=backend).work(burst=True)
    assert job.get_status() == "failed"
    assert "AbandonedJobError" in job.exc_info and "'ghost'" in job.exc_info
    assert q.failed_job_registry.get_job_ids() == [job.id]
    assert q.started_job_registry.count == 0
    assert "ghost" not in [w.name for w in backend.list_workers()]
    job.requeue()
    Worker([q], connection=backend).work(burst=True)
    assert job.get_status() == "finished" and job.result == 3


def test_abandoned_job_with_retry_runs_again(backend):
    q = Queue("ab", connection=backend)
    job = q.enqueue(tasks.add, 1, 2, retry=Retry(max=1))
    claim_by_ghost(backend, q)
    backend.clock.advance(6)
    Worker([q], connection=backend).work(burst=True)
    assert job.get_status() == "finished"
    assert job.result == 3
    assert job.retries_left == 0
    assert job.attempts == 2


def test_maintenance_alone_recovers(backend):
    q = Queue("ab", connection=backend)
    job = q.enqueue(tasks.add, 1, 2)
    claim_by_ghost(backend, q)
    backend.clock.advance(6)
    q.backend.maintenance()
    assert job.get_status() == JobStatus.FAILED


def test_stale_worker_cannot_overwrite_the_attempt_that_replaced_it(backend):
    """A worker that stalled past its lease finishes late: its outcome is dropped."""
    from plugq import _lifecycle

    q = Queue("ab", connection=backend)
    job = q.enqueue(tasks.add, 1, 2, retry=Retry(max=1))
    now = backend.clock.now()
    backend.register_worker(WorkerRecord(name="stalled", queues=["ab"], pid=1, hostname="h",
                                         birth=now, last_heartbeat=now))
    stale = backend.claim(["ab"], "stalled", now)
    backend.clock.advance(6)
    q.backend.maintenance()  # the stalled worker's job is recovered and requeued
    fresh = backend.claim(["ab"], "fresh", backend.clock.now())
    assert fresh is not None and fresh.attempts == 2
    # The stalled worker wakes up and reports a result for attempt 1.
    assert _lifecycle.finish(backend, stale, b"stale") is False
    assert job.get_status() == "started"
    assert job.worker_name == "fresh"
    assert _lifecycle.finish(backend, fresh, None) is True
    assert job.get_status() == "finished"
