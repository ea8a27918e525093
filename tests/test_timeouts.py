"""Timeouts where SIGALRM cannot be used: another thread, or a platform without it."""

from __future__ import annotations

import threading
import time
import types
import uuid

import pytest

import plugq._execution as execution
from plugq import JobTimeoutException, ManualClock, Queue, Worker
from plugq.testing import tasks
from plugq_memory import MemoryStorage


@pytest.fixture
def no_sigalrm(monkeypatch):
    """Make plugq see a ``signal`` module without SIGALRM, as on Windows."""
    import signal as real

    fake = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if k != "SIGALRM"})
    monkeypatch.setattr(execution, "signal", fake)
    return fake


def test_call_times_out_without_sigalrm(no_sigalrm):
    assert not hasattr(execution.signal, "SIGALRM")
    with pytest.raises(JobTimeoutException, match="maximum timeout value"):
        execution.call(tasks.busy, (30,), {}, 0.3)
    assert execution.call(tasks.add, (1, 2), {}, 5) == 3


def test_worker_times_out_a_job_without_sigalrm(no_sigalrm):
    backend = MemoryStorage(f"memory://nosig-{uuid.uuid4().hex}", clock=ManualClock())
    q = Queue("nosig", connection=backend)
    slow = q.enqueue(tasks.busy, 30, job_timeout=1)
    after = q.enqueue(tasks.add, 2, 2)
    Worker([q]).work(burst=True)
    assert slow.get_status() == "failed"
    assert "JobTimeoutException" in slow.exc_info
    assert after.get_status() == "finished" and after.result == 4


def test_sync_mode_timeout_in_a_thread():
    backend = MemoryStorage(f"memory://thread-{uuid.uuid4().hex}", clock=ManualClock())
    box = {}

    def run():
        q = Queue("t", connection=backend, is_async=False)
        box["job"] = q.enqueue(tasks.busy, 30, job_timeout=1)

    t = threading.Thread(target=run)
    t.start()
    t.join(20)
    assert not t.is_alive()
    job = box["job"]
    assert job.get_status() == "failed"
    assert "JobTimeoutException" in job.exc_info


def test_job_inside_a_job_keeps_the_outer_timeout():
    url = f"memory://nested-{uuid.uuid4().hex}"
    q = Queue("outer", connection=url)
    job = q.enqueue(tasks.sync_job_then_sleep, url, 30, job_timeout=1)
    started = time.monotonic()
    Worker([q]).work(burst=True)
    assert time.monotonic() - started < 20
    assert job.get_status() == "failed"
    assert "JobTimeoutException" in job.exc_info
    inner = Queue("inner", connection=url).finished_job_registry.get_jobs()
    assert [j.result for j in inner] == [2]
