"""Unit-testing tasks on the in-memory backend: no server, no files, real semantics.

    pytest examples/test_tasks.py

Jobs go through the same path as in production: arguments are serialized at
enqueue, the worker imports the task by its dotted path, failures are stored.
Each test uses its own named memory store, so tests cannot see each other's jobs.
"""

from __future__ import annotations

import uuid

import pytest
from tasks import digit_sum

from plugq import JobStatus, Queue, Worker
from plugq.exceptions import InvalidTaskError, SerializationError


@pytest.fixture
def queue() -> Queue:
    return Queue("default", connection=f"memory://test-tasks-{uuid.uuid4().hex}")


def test_digit_sum_directly() -> None:
    # A task is a plain function: test its logic without any queue first.
    assert digit_sum("0") == 0
    assert digit_sum("ff") == 30
    assert digit_sum("1a2b") == 1 + 10 + 2 + 11


def test_digit_sum_through_a_worker(queue: Queue) -> None:
    jobs = [queue.enqueue(digit_sum, s) for s in ("ff", "123", "a")]
    assert queue.count == 3

    Worker([queue]).work(burst=True)

    assert [j.get_status() for j in jobs] == [JobStatus.FINISHED] * 3
    assert [j.return_value() for j in jobs] == [30, 6, 10]
    assert queue.is_empty()
    assert queue.finished_job_registry.count == 3


def test_a_failing_job_is_stored_with_its_traceback(queue: Queue) -> None:
    job = queue.enqueue(digit_sum, "not hex")
    Worker([queue]).work(burst=True)

    assert job.get_status() == JobStatus.FAILED
    assert job.exc_info is not None and "ValueError" in job.exc_info
    assert queue.failed_job_registry.get_job_ids() == [job.id]


def test_bad_arguments_fail_at_enqueue_as_in_production(queue: Queue) -> None:
    # A lock cannot be pickled: the memory backend serializes arguments like
    # SQLite and Redis do, so the test fails here rather than in production.
    import threading

    with pytest.raises(SerializationError):
        queue.enqueue(digit_sum, threading.Lock())


def test_a_lambda_is_refused_with_a_reason(queue: Queue) -> None:
    with pytest.raises(InvalidTaskError, match="lambda"):
        queue.enqueue(lambda: 1)
