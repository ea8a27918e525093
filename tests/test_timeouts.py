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


# -- a stop that comes before the job's function is called ------------------------------

def test_an_interrupt_before_the_call_raises_at_its_start_without_calling():
    from plugq import JobStoppedException

    calls = []
    running = execution.Running()
    assert running.interrupt(JobStoppedException)
    with pytest.raises(JobStoppedException, match="before it was called"):
        execution.call(calls.append, (1,), {}, 5, running)
    assert calls == []
    assert not running.interrupt(JobStoppedException)  # one interrupt per call


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_stop_between_claim_and_call_stops_the_job_without_running_it(backend, tmp_path, caplog):
    """The stop-job command is taken while the job is claimed but its function not yet called.

    The worker runs in the main thread, where an interrupt is delivered as
    SIGALRM: one sent then would land in the worker's own code (before, it
    failed the job as a timeout). The job must end stopped, its function
    never called, and the worker go on.
    """
    import logging

    from plugq import hookimpl
    from plugq.command import send_stop_job_command
    from plugq.plugins import register, unregister

    url = (f"memory://early-stop-{uuid.uuid4().hex}" if backend == "memory"
           else f"sqlite:///{tmp_path / 'early.db'}")
    q = Queue("early-stop", connection=url)
    ran, record = tmp_path / "ran", tmp_path / "stopped"
    job = q.enqueue(tasks.append_line, str(ran), "ran", on_stopped=tasks.on_stopped_record,
                    meta={"path": str(record)})
    after = q.enqueue(tasks.add, 1, 2)
    taken = threading.Event()

    class Taken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "received command" in record.getMessage() and job.id in record.getMessage():
                taken.set()

    class StopBeforeCall:
        @hookimpl
        def plugq_job_started(self, job, worker):  # in perform, before the function is called
            if job.id == stopped_id:
                send_stop_job_command(q.connection, job.id)
                assert taken.wait(10), "the worker never took the stop-job command"

    stopped_id = job.id
    caplog.set_level(logging.INFO, logger="plugq.worker")
    handler = Taken()
    logging.getLogger("plugq.worker").addHandler(handler)
    name = f"stop-before-call-{uuid.uuid4().hex}"
    register(StopBeforeCall(), name=name)
    try:
        assert threading.current_thread() is threading.main_thread()
        w = Worker([q])
        assert w.work(burst=True)
    finally:
        unregister(name=name)
        logging.getLogger("plugq.worker").removeHandler(handler)
    assert job.get_status() == "stopped" and "JobStoppedException" in job.exc_info
    assert not ran.exists()  # the function was never called
    assert record.read_text().split() == ["stopped", job.id]
    assert job.id not in q.started_job_registry.get_job_ids()
    assert after.get_status() == "finished" and after.result == 3
    assert (w.successful_job_count, w.failed_job_count) == (1, 1)


@pytest.mark.parametrize("worker_class", ["fork", "spawn"])
def test_a_horse_stopped_before_it_exists_is_never_started(worker_class, tmp_path):
    from plugq import JobStoppedException
    from plugq._process import Horse, run_isolated
    from plugq._worker_loop import fail_outside, perform, stop_outside
    from plugq.backend import WorkerSpec
    from plugq.connection import connect

    url = f"sqlite:///{tmp_path / 'horse.db'}"
    q = Queue("horse", connection=url)
    ran, record = tmp_path / "ran", tmp_path / "stopped"
    job = q.enqueue(tasks.append_line, str(ran), "ran", on_stopped=tasks.on_stopped_record,
                    meta={"path": str(record)})
    engine = connect(url)
    rec = engine.storage.claim(["horse"], "w-horse", engine.storage.clock.now())
    assert rec is not None and rec.id == job.id
    horse = Horse()
    assert horse.interrupt(JobStoppedException)  # the command came before the process
    run_isolated(engine, rec, WorkerSpec(name="w-horse", queues=["horse"]), worker_class,
                 perform, fail_outside, stop_outside, horse=horse)
    assert horse.pid is None and not ran.exists()
    assert job.get_status() == "stopped"
    assert record.read_text().split() == ["stopped", job.id]
