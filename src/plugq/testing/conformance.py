"""The conformance suite: the definition of correct backend behaviour.

A backend's tests subclass :class:`BackendConformance` and provide a
``backend`` fixture that yields a fresh, empty backend::

    from plugq.testing.conformance import BackendConformance

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            b = MyBackend(f"mine:///{tmp_path}/db")
            yield b
            b.close()

Every test asserts what a user can observe (status, registries, results,
tracebacks, timestamps, side effects in files). Time-dependent tests move a
:class:`~plugq.ManualClock` when the backend has one and otherwise wait for
real, with intervals of about a second.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from plugq import (
    Callback,
    Dependency,
    DuplicateJobError,
    Group,
    InvalidJobOperation,
    InvalidTaskError,
    Job,
    JobStatus,
    ManualClock,
    NoSuchJobError,
    NotSupportedError,
    Queue,
    Repeat,
    Result,
    Retry,
    SerializationError,
    SimpleWorker,
    Worker,
    cancel_job,
)
from plugq.command import send_shutdown_command, send_stop_job_command
from plugq.group import NoSuchGroupError
from plugq.serializers import JSONSerializer
from plugq.testing import tasks
from plugq.testing.beyond import BeyondConformance


def advance(backend, seconds: float) -> None:
    """Move the backend's time forward: instantly on a ManualClock, else really wait."""
    if isinstance(backend.clock, ManualClock):
        backend.clock.advance(seconds)
    else:
        time.sleep(seconds)


def work(queues, backend, **kwargs) -> bool:
    """Run a burst worker over ``queues`` (Queue objects) until nothing is runnable."""
    return Worker(list(queues), connection=backend, **kwargs).work(burst=True)


def wait_until(predicate, timeout: float = 15.0, message: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test with ``message`` after ``timeout``."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(0.01)


class BackendConformance(BeyondConformance):
    """Subclass with a ``backend`` fixture; every test must pass.

    plugq's features beyond RQ are in :class:`~plugq.testing.beyond.BeyondConformance`.
    """

    # -- fixtures -------------------------------------------------------------

    @pytest.fixture
    def qname(self) -> str:
        return f"q-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def queue(self, backend, qname) -> Queue:
        return Queue(qname, connection=backend)

    @pytest.fixture
    def path(self, tmp_path) -> str:
        """A file name for side effects a task writes."""
        return str(tmp_path / f"side-{uuid.uuid4().hex[:6]}.txt")

    # -- enqueue and inspect --------------------------------------------------

    def test_enqueue_creates_queued_job(self, backend, queue):
        job = queue.enqueue(tasks.sum_numbers_from_string, "hbj2-plug-2")
        assert job.get_status() == "queued"
        assert job.get_status() is JobStatus.QUEUED
        assert job.is_queued
        assert job.origin == queue.name
        assert job.func_name == "plugq.testing.tasks.sum_numbers_from_string"
        assert job.description == "plugq.testing.tasks.sum_numbers_from_string('hbj2-plug-2')"
        assert job.args == ("hbj2-plug-2",)
        assert job.kwargs == {}
        assert job.timeout == 180
        assert job.result_ttl == 500
        assert isinstance(job.created_at, datetime)
        assert isinstance(job.enqueued_at, datetime)
        assert job.started_at is None and job.ended_at is None
        assert len(queue) == 1 and queue.count == 1
        assert queue.get_job_ids() == [job.id]
        assert [j.id for j in queue.get_jobs()] == [job.id]
        assert queue.fetch_job(job.id).id == job.id
        assert Job.fetch(job.id, connection=backend).args == ("hbj2-plug-2",)
        assert job.get_id() == job.id
        assert repr(queue) == f"Queue({queue.name!r})"
        assert repr(job).startswith(f"Job({job.id!r}, enqueued_at=datetime.datetime(")

    def test_job_ids_are_uuid4_by_default(self, queue):
        job = queue.enqueue(tasks.add, 1, 2)
        assert uuid.UUID(job.id).version == 4

    def test_to_dict_has_rq_keys(self, queue):
        job = queue.enqueue(tasks.sum_numbers_from_string, "a1b2")
        d = job.to_dict()
        for key in ("created_at", "data", "origin", "description", "enqueued_at",
                    "started_at", "ended_at", "timeout", "status"):
            assert key in d, key
        assert d["status"] == "queued"
        assert d["origin"] == queue.name
        assert d["timeout"] == 180
        assert d["description"] == "plugq.testing.tasks.sum_numbers_from_string('a1b2')"
        assert isinstance(d["data"], bytes) and d["data"]
        assert d["started_at"] == "" and d["enqueued_at"].endswith("Z")

    def test_fetch_missing_job(self, backend, queue):
        assert queue.fetch_job("no-such-job") is None
        with pytest.raises(NoSuchJobError):
            Job.fetch("no-such-job", connection=backend)

    def test_fetch_job_of_another_queue_is_none(self, backend, queue):
        other = Queue(queue.name + "-other", connection=backend)
        job = other.enqueue(tasks.add, 1, 1)
        assert queue.fetch_job(job.id) is None
        assert other.fetch_job(job.id) is not None

    def test_custom_job_id(self, queue):
        job = queue.enqueue(tasks.add, 1, 2, job_id="my-job.1")
        assert job.id == "my-job.1"
        assert queue.get_job_ids() == ["my-job.1"]

    @pytest.mark.parametrize("bad", ["has space", "a:b", "a/b", ""])
    def test_forbidden_job_id_refused(self, queue, bad):
        with pytest.raises(ValueError, match="job_id"):
            queue.enqueue(tasks.add, 1, 2, job_id=bad)
        assert len(queue) == 0

    def test_lambda_and_nested_function_refused(self, queue):
        with pytest.raises(InvalidTaskError, match="lambda"):
            queue.enqueue(lambda: 1)

        def nested():
            return 1

        with pytest.raises(InvalidTaskError, match="nested"):
            queue.enqueue(nested)
        assert len(queue) == 0

    def test_unserializable_argument_fails_at_enqueue(self, queue):
        with pytest.raises(SerializationError):
            queue.enqueue(tasks.echo, threading.Lock())
        assert len(queue) == 0

    def test_enqueue_by_dotted_path_and_kwargs(self, backend, queue):
        job = queue.enqueue("plugq.testing.tasks.add", a=2, b=5)
        assert job.kwargs == {"a": 2, "b": 5}
        work([queue], backend)
        assert job.return_value() == 7

    def test_explicit_args_kwargs_and_enqueue_call(self, backend, queue):
        j1 = queue.enqueue(tasks.echo, args=(1, 2), kwargs={"x": 3})
        j2 = queue.enqueue_call(func=tasks.echo, args=(4,), kwargs={"y": 5}, timeout=30)
        assert j2.timeout == 30
        work([queue], backend)
        assert j1.result == {"args": [1, 2], "kwargs": {"x": 3}}
        assert j2.result == {"args": [4], "kwargs": {"y": 5}}

    def test_classmethod_task(self, backend, queue):
        job = queue.enqueue(tasks.Calculator.double, 21)
        work([queue], backend)
        assert job.result == 42

    # -- running ----------------------------------------------------------------

    def test_worker_runs_job_and_stores_result(self, backend, queue):
        job = queue.enqueue(tasks.sum_numbers_from_string, "hbj2-plug-2")
        assert job.result is None
        assert work([queue], backend) is True
        assert job.get_status() == "finished"
        assert job.is_finished
        assert job.result == 4
        assert job.return_value() == 4
        assert job.started_at is not None and job.ended_at is not None
        assert job.enqueued_at <= job.started_at <= job.ended_at
        assert len(queue) == 0
        assert queue.finished_job_registry.get_job_ids() == [job.id]
        assert queue.started_job_registry.count == 0
        assert job in queue.finished_job_registry

    def test_burst_worker_on_empty_queue_returns_false(self, backend, queue):
        assert work([queue], backend) is False

    def test_failure_stores_exc_info_and_worker_carries_on(self, backend, queue):
        bad = queue.enqueue(tasks.fail, "kaput")
        good = queue.enqueue(tasks.add, 2, 3)
        work([queue], backend)
        assert bad.get_status() == "failed"
        assert bad.is_failed
        assert "ValueError: kaput" in bad.exc_info
        assert "Traceback" in bad.exc_info
        assert bad.result is None
        assert bad.ended_at is not None
        assert queue.failed_job_registry.get_job_ids() == [bad.id]
        assert len(queue.failed_job_registry) == 1
        assert good.get_status() == "finished" and good.result == 5

    def test_missing_task_fails_with_readable_reason(self, backend, queue):
        job = queue.enqueue("plugq.testing.tasks.no_such_function", 1)
        after = queue.enqueue(tasks.add, 1, 1)
        work([queue], backend)
        assert job.get_status() == "failed"
        assert "no_such_function" in job.exc_info
        assert after.get_status() == "finished"

    def test_named_queue_and_named_worker(self, backend):
        q = Queue("queue1", connection=backend)
        job = q.enqueue(tasks.add, 1, 1)
        Worker([q], connection=backend, name="worker1").work(burst=True)
        assert job.get_status() == "finished"
        assert job.worker_name == "worker1"

    def test_worker_takes_queues_in_order_given(self, backend, qname, path):
        high = Queue(qname + "-high", connection=backend)
        low = Queue(qname + "-low", connection=backend)
        for i in range(3):
            low.enqueue(tasks.append_line, path, f"low{i}")
        for i in range(3):
            high.enqueue(tasks.append_line, path, f"high{i}")
        work([high, low], backend)
        lines = Path(path).read_text().split()
        assert lines == ["high0", "high1", "high2", "low0", "low1", "low2"]

    def test_at_front(self, backend, queue, path):
        queue.enqueue(tasks.append_line, path, "first")
        front = queue.enqueue(tasks.append_line, path, "front", at_front=True)
        assert queue.get_job_ids()[0] == front.id
        work([queue], backend)
        assert Path(path).read_text().split() == ["front", "first"]

    def test_fifo_order(self, backend, queue, path):
        jobs = [queue.enqueue(tasks.append_line, path, str(i)) for i in range(5)]
        assert queue.get_job_ids() == [j.id for j in jobs]
        assert queue.get_job_ids(1, 2) == [jobs[1].id, jobs[2].id]
        work([queue], backend)
        assert Path(path).read_text().split() == ["0", "1", "2", "3", "4"]

    def test_max_jobs(self, backend, queue):
        jobs = [queue.enqueue(tasks.add, i, i) for i in range(3)]
        Worker([queue], connection=backend).work(burst=True, max_jobs=2)
        statuses = [j.get_status() for j in jobs]
        assert statuses.count(JobStatus.FINISHED) == 2
        assert len(queue) == 1

    def test_async_def_task(self, backend, queue):
        job = queue.enqueue(tasks.async_add, 20, 22)
        work([queue], backend)
        assert job.get_status() == "finished"
        assert job.result == 42

    def test_unserializable_result_fails_job(self, backend, queue):
        job = queue.enqueue(tasks.return_unpicklable)
        work([queue], backend)
        assert job.get_status() == "failed"
        assert job.exc_info

    # -- meta and introspection ---------------------------------------------

    def test_meta_and_save_meta(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 2, meta={"owner": "alice"})
        assert job.meta == {"owner": "alice"}
        job.meta["step"] = 1
        job.save_meta()
        again = Job.fetch(job.id, connection=backend)
        assert again.meta == {"owner": "alice", "step": 1}

    def test_get_current_job_inside_task(self, backend, queue):
        job = queue.enqueue(tasks.current_job_id)
        work([queue], backend)
        assert job.result == job.id

    def test_meta_written_by_running_job_is_visible(self, backend, queue):
        job = queue.enqueue(tasks.report_progress, 3, meta={"owner": "bob"})
        work([queue], backend)
        assert job.get_status() == "finished"
        fetched = Job.fetch(job.id, connection=backend)
        assert fetched.meta == {"owner": "bob", "progress": 3}

    # -- removing and registries -----------------------------------------------

    def test_empty_returns_number_removed(self, queue):
        for i in range(4):
            queue.enqueue(tasks.add, i, i)
        assert queue.empty() == 4
        assert len(queue) == 0
        assert queue.is_empty()

    def test_delete_queue_with_jobs(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1)
        queue.delete(delete_jobs=True)
        assert len(queue) == 0
        assert queue.fetch_job(job.id) is None

    def test_job_delete(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1)
        job.delete()
        assert len(queue) == 0
        with pytest.raises(NoSuchJobError):
            Job.fetch(job.id, connection=backend)

    def test_queue_all(self, backend, qname):
        a = Queue(qname + "-a", connection=backend)
        b = Queue(qname + "-b", connection=backend)
        a.enqueue(tasks.add, 1, 1)
        b.enqueue(tasks.add, 1, 1)
        names = [q.name for q in Queue.all(connection=backend)]
        assert a.name in names and b.name in names

    def test_registry_remove(self, backend, queue):
        job = queue.enqueue(tasks.fail)
        work([queue], backend)
        registry = queue.failed_job_registry
        assert job.id in registry.get_job_ids()
        registry.remove(job, delete_job=True)
        assert registry.count == 0
        assert queue.fetch_job(job.id) is None

    def test_enqueue_many_is_one_batch(self, backend, queue):
        datas = [
            Queue.prepare_data(tasks.add, (i, i), job_id=f"batch-{i}") for i in range(5)
        ]
        jobs = queue.enqueue_many(datas)
        assert [j.id for j in jobs] == [f"batch-{i}" for i in range(5)]
        assert queue.get_job_ids() == [f"batch-{i}" for i in range(5)]
        work([queue], backend)
        assert [j.return_value() for j in jobs] == [0, 2, 4, 6, 8]

    def test_enqueue_many_all_or_nothing(self, queue):
        datas = [Queue.prepare_data(tasks.add, (1, 1)), Queue.prepare_data(tasks.echo, (threading.Lock(),))]
        with pytest.raises(SerializationError):
            queue.enqueue_many(datas)
        assert len(queue) == 0

    def test_registry_counts_across_statuses(self, backend, queue):
        queue.enqueue(tasks.add, 1, 1)
        queue.enqueue(tasks.fail)
        work([queue], backend)
        queue.enqueue(tasks.add, 2, 2)
        queue.enqueue_in(timedelta(hours=1), tasks.add, 3, 3)
        parent = queue.enqueue(tasks.add, 4, 4)
        queue.enqueue(tasks.add, 5, 5, depends_on=parent)
        assert queue.finished_job_registry.count == 1
        assert queue.failed_job_registry.count == 1
        assert queue.scheduled_job_registry.count == 1
        assert queue.deferred_job_registry.count == 1
        assert queue.started_job_registry.count == 0
        assert len(queue) == 2

    # -- retries -----------------------------------------------------------------

    def test_retry_until_success(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 2, retry=Retry(max=3))
        assert job.retries_left == 3
        work([queue], backend)
        assert job.get_status() == "finished"
        assert job.result == 3
        assert job.retries_left == 1
        assert Path(path).read_text() == "3"

    def test_retry_without_interval_goes_back_to_its_queue(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 1, retry=Retry(max=2))
        Worker([queue], connection=backend).work(burst=True, max_jobs=1)
        assert job.get_status() == "queued"
        assert job.retries_left == 1
        assert queue.get_job_ids() == [job.id]
        assert "attempt 1 fails on purpose" in job.exc_info
        assert queue.failed_job_registry.count == 0
        work([queue], backend)
        assert job.get_status() == "finished" and job.result == 2

    def test_retry_exhausted_fails_with_last_exc_info(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 10, retry=Retry(max=2))
        work([queue], backend)
        assert job.get_status() == "failed"
        assert job.retries_left == 0
        assert "attempt 3 fails on purpose" in job.exc_info
        assert Path(path).read_text() == "3"
        assert queue.failed_job_registry.get_job_ids() == [job.id]

    def test_retry_interval_schedules_the_retry(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 1, retry=Retry(max=1, interval=1))
        work([queue], backend)
        assert job.get_status() == "scheduled"
        assert job.id in queue.scheduled_job_registry.get_job_ids()
        assert "attempt 1 fails on purpose" in job.exc_info
        work([queue], backend)  # not due yet
        assert job.get_status() == "scheduled"
        advance(backend, 1.2)
        work([queue], backend)
        assert job.get_status() == "finished"
        assert job.result == 2

    def test_retry_interval_list(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 2, retry=Retry(max=3, interval=[1, 2]))
        work([queue], backend)
        assert job.get_status() == "scheduled"
        first = job.scheduled_for
        advance(backend, 1.2)
        work([queue], backend)
        assert job.get_status() == "scheduled"
        second_wait = (job.scheduled_for - job.ended_at).total_seconds()
        assert 1.5 <= second_wait <= 2.5
        assert job.scheduled_for > first
        advance(backend, 2.2)
        work([queue], backend)
        assert job.get_status() == "finished"
        assert job.result == 3

    # -- timeouts ----------------------------------------------------------------

    def test_timeout_fails_job_and_worker_continues(self, backend, queue):
        slow = queue.enqueue(tasks.sleep, 30, job_timeout=1)
        after = queue.enqueue(tasks.add, 1, 2)
        started = time.monotonic()
        work([queue], backend)
        assert time.monotonic() - started < 20
        assert slow.get_status() == "failed"
        assert "JobTimeoutException" in slow.exc_info
        assert after.get_status() == "finished"

    def test_timeout_outside_main_thread(self, backend, queue):
        slow = queue.enqueue(tasks.busy, 30, job_timeout=1)
        after = queue.enqueue(tasks.add, 1, 2)
        t = threading.Thread(target=work, args=([queue], backend))
        t.start()
        t.join(25)
        assert not t.is_alive()
        assert slow.get_status() == "failed"
        assert "JobTimeoutException" in slow.exc_info
        assert after.get_status() == "finished"

    def test_timeout_is_retried(self, backend, queue):
        job = queue.enqueue(tasks.sleep, 30, job_timeout=1, retry=Retry(max=1))
        work([queue], backend)
        assert job.get_status() == "failed"
        assert job.retries_left == 0
        assert job.exc_info.count("JobTimeoutException") >= 1

    def test_timeout_stops_async_task(self, backend, queue):
        slow = queue.enqueue(tasks.async_sleep, 30, job_timeout=1)
        after = queue.enqueue(tasks.async_add, 1, 2)
        started = time.monotonic()
        work([queue], backend)
        assert time.monotonic() - started < 20
        assert slow.get_status() == "failed"
        assert "JobTimeoutException" in slow.exc_info
        assert after.get_status() == "finished" and after.result == 3

    def test_timeout_settings(self, queue):
        assert queue.enqueue(tasks.add, 1, 1, job_timeout=-1).timeout is None
        assert queue.enqueue(tasks.add, 1, 1, job_timeout="2m").timeout == 120
        for bad in (0, -5):
            with pytest.raises(ValueError, match="job_timeout"):
                queue.enqueue(tasks.add, 1, 1, job_timeout=bad)

    # -- scheduling --------------------------------------------------------------

    def test_enqueue_in(self, backend, queue):
        job = queue.enqueue_in(timedelta(seconds=1), tasks.add, 1, 2)
        assert job.get_status() == "scheduled"
        assert queue.scheduled_job_registry.get_job_ids() == [job.id]
        assert len(queue) == 0
        work([queue], backend)
        assert job.get_status() == "scheduled"
        advance(backend, 1.2)
        work([queue], backend)
        assert job.get_status() == "finished"
        assert job.result == 3
        assert queue.scheduled_job_registry.count == 0

    def test_enqueue_at(self, backend, queue):
        when = datetime.fromtimestamp(backend.clock.now() + 1, tz=UTC)
        job = queue.enqueue_at(when, tasks.add, 2, 2)
        assert job.get_status() == "scheduled"
        assert abs((job.scheduled_for - when).total_seconds()) < 0.01
        advance(backend, 1.2)
        work([queue], backend)
        assert job.result == 4

    def test_enqueue_at_in_the_past_runs_at_once(self, backend, queue):
        when = datetime.fromtimestamp(backend.clock.now() - 60, tz=UTC)
        job = queue.enqueue_at(when, tasks.add, 2, 3)
        work([queue], backend)
        assert job.result == 5

    def test_worker_without_scheduler_leaves_due_jobs(self, backend, queue):
        job = queue.enqueue_in(timedelta(seconds=1), tasks.add, 1, 2)
        advance(backend, 1.2)
        Worker([queue], connection=backend).work(burst=True, with_scheduler=False)
        assert job.get_status() == "scheduled"

    def test_scheduled_job_runs_once_with_many_workers(self, backend, queue, path):
        job = queue.enqueue_in(timedelta(seconds=1), tasks.append_line, path, "once")
        advance(backend, 1.2)
        threads = [threading.Thread(target=work, args=([queue], backend)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert job.get_status() == "finished"
        assert Path(path).read_text().split() == ["once"]

    # -- dependencies ------------------------------------------------------------

    def test_dependent_is_deferred_until_dependency_finishes(self, backend, queue, path):
        parent = queue.enqueue(tasks.append_line, path, "parent")
        child = queue.enqueue(tasks.append_line, path, "child", depends_on=parent)
        assert child.get_status() == "deferred"
        assert queue.deferred_job_registry.get_job_ids() == [child.id]
        assert queue.get_job_ids() == [parent.id]
        work([queue], backend)
        assert parent.get_status() == "finished"
        assert child.get_status() == "finished"
        assert Path(path).read_text().split() == ["parent", "child"]

    def test_depends_on_finished_job_is_queued_at_once(self, backend, queue):
        parent = queue.enqueue(tasks.add, 1, 1)
        work([queue], backend)
        child = queue.enqueue(tasks.add, 2, 2, depends_on=parent.id)
        assert child.get_status() == "queued"

    def test_depends_on_several_jobs(self, backend, qname, path):
        q1 = Queue(qname + "-1", connection=backend)
        q2 = Queue(qname + "-2", connection=backend)
        a = q1.enqueue(tasks.append_line, path, "a")
        b = q2.enqueue(tasks.append_line, path, "b")
        c = q1.enqueue(tasks.append_line, path, "c", depends_on=[a, b])
        work([q1], backend)
        assert a.get_status() == "finished"
        assert c.get_status() == "deferred"
        work([q2], backend)
        assert c.get_status() == "queued"
        work([q1], backend)
        assert c.get_status() == "finished"
        assert Path(path).read_text().split() == ["a", "b", "c"]

    def test_failed_dependency_leaves_dependent_deferred(self, backend, queue):
        parent = queue.enqueue(tasks.fail)
        child = queue.enqueue(tasks.add, 1, 1, depends_on=parent)
        work([queue], backend)
        assert parent.get_status() == "failed"
        assert child.get_status() == "deferred"

    def test_allow_failure_runs_dependent_after_failure(self, backend, queue):
        parent = queue.enqueue(tasks.fail)
        child = queue.enqueue(
            tasks.add, 1, 1, depends_on=Dependency(jobs=[parent], allow_failure=True)
        )
        work([queue], backend)
        assert parent.get_status() == "failed"
        assert child.get_status() == "finished"
        assert child.result == 2

    def test_dependency_on_missing_job_refused(self, queue):
        with pytest.raises(NoSuchJobError):
            queue.enqueue(tasks.add, 1, 1, depends_on="no-such-job")
        assert len(queue) == 0

    # -- callbacks ---------------------------------------------------------------

    def test_success_callback(self, backend, queue, path):
        cb_file = path + ".cb"
        job = queue.enqueue(tasks.add, 2, 3, on_success=tasks.on_success_record,
                            meta={"callback_file": cb_file})
        work([queue], backend)
        assert job.get_status() == "finished"
        assert Path(cb_file).read_text().split() == ["success", job.id, "5"]

    def test_failure_callback(self, backend, queue, path):
        cb_file = path + ".cb"
        job = queue.enqueue(tasks.fail, on_failure=tasks.on_failure_record,
                            meta={"callback_file": cb_file})
        work([queue], backend)
        assert job.get_status() == "failed"
        assert Path(cb_file).read_text().split() == ["failure", job.id, "ValueError"]

    def test_failing_callback_does_not_change_outcome(self, backend, queue):
        ok = queue.enqueue(tasks.add, 1, 1, on_success=tasks.callback_that_fails)
        bad = queue.enqueue(tasks.fail, on_failure=tasks.callback_that_fails)
        after = queue.enqueue(tasks.add, 2, 2)
        work([queue], backend)
        assert ok.get_status() == "finished" and ok.result == 2
        assert bad.get_status() == "failed" and "ValueError: boom" in bad.exc_info
        assert after.get_status() == "finished"

    # -- cancel and requeue -----------------------------------------------------

    def test_cancel_queued_job_never_runs(self, backend, queue, path):
        job = queue.enqueue(tasks.append_line, path, "x")
        job.cancel()
        assert job.get_status() == "canceled"
        assert queue.canceled_job_registry.get_job_ids() == [job.id]
        assert len(queue) == 0
        assert work([queue], backend) is False
        assert not Path(path).exists()
        with pytest.raises(InvalidJobOperation):
            job.cancel()

    def test_cancel_scheduled_and_deferred(self, backend, queue):
        sched = queue.enqueue_in(timedelta(seconds=1), tasks.add, 1, 1)
        parent = queue.enqueue(tasks.add, 1, 1)
        child = queue.enqueue(tasks.add, 2, 2, depends_on=parent)
        sched.cancel()
        child.cancel()
        advance(backend, 1.2)
        work([queue], backend)
        assert sched.get_status() == "canceled"
        assert child.get_status() == "canceled"
        assert queue.canceled_job_registry.count == 2

    def test_cancel_finished_job_refused(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1)
        work([queue], backend)
        with pytest.raises(InvalidJobOperation):
            job.cancel()
        assert job.get_status() == "finished"

    def test_requeue_failed_job(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 1)
        work([queue], backend)
        assert job.get_status() == "failed"
        job.requeue()
        assert job.get_status() == "queued"
        assert queue.failed_job_registry.count == 0
        assert queue.get_job_ids() == [job.id]
        work([queue], backend)
        assert job.get_status() == "finished"
        assert job.result == 2

    def test_failed_registry_requeue(self, backend, queue, path):
        job = queue.enqueue(tasks.fail_until, path, 1)
        work([queue], backend)
        queue.failed_job_registry.requeue(job.id)
        assert job.get_status() == "queued"
        work([queue], backend)
        assert job.get_status() == "finished"

    def test_requeue_invalid_states_refused(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1)
        with pytest.raises(InvalidJobOperation):
            job.requeue()
        work([queue], backend)
        with pytest.raises(InvalidJobOperation):
            job.requeue()
        with pytest.raises(InvalidJobOperation):
            queue.failed_job_registry.requeue(job.id)
        assert job.get_status() == "finished"

    # -- TTLs --------------------------------------------------------------------

    def test_result_ttl_zero_deletes_job(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1, result_ttl=0)
        work([queue], backend)
        assert queue.fetch_job(job.id) is None
        assert queue.finished_job_registry.count == 0

    def test_result_ttl_expires(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1, result_ttl=1)
        work([queue], backend)
        assert queue.fetch_job(job.id).result == 2
        advance(backend, 2.2)
        assert queue.fetch_job(job.id) is None
        assert queue.finished_job_registry.count == 0

    def test_result_ttl_minus_one_keeps(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 1, result_ttl=-1)
        work([queue], backend)
        advance(backend, 1.2)
        assert queue.fetch_job(job.id).result == 2

    def test_failure_ttl_expires(self, backend, queue):
        job = queue.enqueue(tasks.fail, failure_ttl=1)
        work([queue], backend)
        assert queue.fetch_job(job.id).get_status() == "failed"
        advance(backend, 2.2)
        assert queue.fetch_job(job.id) is None
        assert queue.failed_job_registry.count == 0

    def test_ttl_discards_job_not_started_in_time(self, backend, queue, path):
        job = queue.enqueue(tasks.append_line, path, "late", ttl=1)
        assert job.ttl == 1
        advance(backend, 2.2)
        work([queue], backend)
        assert queue.fetch_job(job.id) is None
        assert not Path(path).exists()

    # -- unique jobs ---------------------------------------------------------------

    def test_unique_job_id_refused_while_queued(self, backend, queue):
        queue.enqueue(tasks.add, 1, 1, job_id="only-one", unique=True)
        with pytest.raises(DuplicateJobError):
            queue.enqueue(tasks.add, 2, 2, job_id="only-one", unique=True)
        assert len(queue) == 1
        assert queue.fetch_job("only-one").args == (1, 1)
        work([queue], backend)
        again = queue.enqueue(tasks.add, 3, 3, job_id="only-one", unique=True)
        assert again.get_status() == "queued"

    # -- sync mode ---------------------------------------------------------------

    def test_sync_mode_runs_at_once(self, backend, qname):
        q = Queue(qname, connection=backend, is_async=False)
        job = q.enqueue(tasks.add, 2, 2)
        assert job.get_status() == "finished"
        assert job.result == 4
        assert q.finished_job_registry.get_job_ids() == [job.id]

    def test_sync_mode_failure_is_stored_not_hidden(self, backend, qname):
        q = Queue(qname, connection=backend, is_async=False)
        job = q.enqueue(tasks.fail, "sync boom")
        assert job.get_status() == "failed"
        assert "ValueError: sync boom" in job.exc_info
        assert q.failed_job_registry.get_job_ids() == [job.id]

    def test_sync_mode_retries(self, backend, qname, path):
        q = Queue(qname, connection=backend, is_async=False)
        job = q.enqueue(tasks.fail_until, path, 2, retry=Retry(max=2))
        assert job.get_status() == "finished"
        assert job.result == 3
        assert job.retries_left == 0

    def test_sync_mode_timeout(self, backend, qname):
        q = Queue(qname, connection=backend, is_async=False)
        job = q.enqueue(tasks.sleep, 30, job_timeout=1)
        assert job.get_status() == "failed"
        assert "JobTimeoutException" in job.exc_info

    def test_sync_mode_callbacks(self, backend, qname, path):
        cb_file = path + ".cb"
        q = Queue(qname, connection=backend, is_async=False)
        job = q.enqueue(tasks.add, 1, 4, on_success=tasks.on_success_record,
                        meta={"callback_file": cb_file})
        assert Path(cb_file).read_text().split() == ["success", job.id, "5"]

    # -- workers -------------------------------------------------------------------

    def test_worker_is_registered_while_working(self, backend, queue, tmp_path):
        started, release = str(tmp_path / "started"), str(tmp_path / "release")
        job = queue.enqueue(tasks.touch_then_wait, started, release)
        w = Worker([queue], connection=backend, name="seen-worker")
        t = threading.Thread(target=w.work, kwargs={"burst": True})
        t.start()
        try:
            wait_until(lambda: Path(started).exists(), message="job to start")
            assert job.get_status() == "started"
            assert queue.started_job_registry.get_job_ids() == [job.id]
            names = [x.name for x in Worker.all(connection=backend)]
            assert "seen-worker" in names
        finally:
            Path(release).touch()
            t.join(30)
        assert job.get_status() == "finished"
        assert "seen-worker" not in [x.name for x in Worker.all(connection=backend)]

    # -- rq 2.x: repeat, groups, callbacks, commands, results, handlers -------------

    @staticmethod
    def needs(queue, feature: str) -> None:
        """Skip when the backend declares it cannot run ``feature`` (it raises NotSupportedError)."""
        if feature not in queue.backend.features:
            pytest.skip(f"{type(queue.backend).__name__} does not run {feature!r} "
                        "(it raises NotSupportedError; see test_unsupported_features_raise)")

    def test_unsupported_features_raise(self, backend, queue):
        checks = {
            "repeat": lambda: queue.enqueue(tasks.add, 1, 2, repeat=Repeat(times=1)),
            "group": lambda: Group.create(connection=backend),
            "on_stopped": lambda: queue.enqueue(tasks.add, 1, 2,
                                                on_stopped=tasks.on_stopped_record),
            "callback_timeout": lambda: queue.enqueue(
                tasks.add, 1, 2, on_success=Callback(tasks.on_success_record, timeout=5)),
        }
        for feature, attempt in checks.items():
            if feature in queue.backend.features:
                continue
            with pytest.raises(NotSupportedError):
                attempt()
        assert len(queue) == 0

    def test_repeat_counts_and_intervals(self, backend, queue, path):
        self.needs(queue, "repeat")
        if not isinstance(queue.backend.clock, ManualClock):
            pytest.skip("exact steps need the manual clock; see test_repeat_on_the_wall_clock")
        job = queue.enqueue(tasks.count_calls, path, repeat=Repeat(times=3, interval=[1, 2]))
        assert job.repeats_left == 3 and job.repeat_intervals == [1, 2]
        work([queue], backend)
        assert job.get_status() == "scheduled" and job.repeats_left == 2
        assert job.return_value() is None and job.latest_result().return_value == 1
        work([queue], backend)  # not due yet
        assert Path(path).read_text().count("x") == 1
        advance(backend, 1)
        work([queue], backend)
        assert job.get_status() == "scheduled" and job.repeats_left == 1
        advance(backend, 1)
        work([queue], backend)
        assert Path(path).read_text().count("x") == 2  # the 2nd repetition waits 2 s
        advance(backend, 1)
        work([queue], backend)
        assert job.get_status() == "scheduled" and job.repeats_left == 0
        advance(backend, 2)  # the last interval repeats
        work([queue], backend)
        assert job.get_status() == "finished" and job.result == 4
        assert [r.return_value for r in job.results()] == [4, 3, 2, 1]

    def test_repeat_on_the_wall_clock(self, backend, queue, path):
        self.needs(queue, "repeat")
        began = time.monotonic()
        job = queue.enqueue(tasks.count_calls, path, repeat=Repeat(times=2, interval=1))
        work([queue], backend)
        while job.get_status() != "finished":
            assert time.monotonic() - began < 30, "the repetitions never ran"
            advance(backend, 0.5)
            work([queue], backend)
        assert job.result == 3 and job.repeats_left == 0
        if not isinstance(queue.backend.clock, ManualClock):
            assert time.monotonic() - began >= 2  # two intervals of 1 s were waited

    def test_repeat_without_interval_requeues_at_once(self, backend, queue, path):
        self.needs(queue, "repeat")
        job = queue.enqueue(tasks.count_calls, path, repeat=Repeat(times=2, interval=0))
        work([queue], backend)
        assert job.get_status() == "finished" and job.result == 3
        assert job.repeats_left == 0

    def test_repeat_is_not_run_after_a_failure(self, backend, queue):
        self.needs(queue, "repeat")
        job = queue.enqueue(tasks.fail, repeat=Repeat(times=2))
        work([queue], backend)
        assert job.get_status() == "failed" and job.repeats_left == 2

    def test_group_membership(self, backend, queue):
        self.needs(queue, "group")
        group = Group.create(connection=backend)
        jobs = group.enqueue_many(queue, [
            Queue.prepare_data(tasks.add, (1, 2), job_id=f"{queue.name}-g1"),
            Queue.prepare_data(tasks.add, (3, 4), job_id=f"{queue.name}-g2"),
        ])
        other = Group.create(connection=backend, name=f"{queue.name}-other")
        other.enqueue_many(queue, [Queue.prepare_data(tasks.add, (5, 6))])
        assert [j.id for j in group.get_jobs()] == [f"{queue.name}-g1", f"{queue.name}-g2"]
        assert all(j.group_id == group.name for j in jobs)
        fetched = Group.fetch(group.name, connection=backend)
        assert [j.id for j in fetched.get_jobs()] == [j.id for j in jobs]
        assert {g.name for g in Group.all(connection=backend)} >= {group.name, other.name}
        assert len(other.get_jobs()) == 1
        jobs[0].delete()
        assert [j.id for j in group.get_jobs()] == [f"{queue.name}-g2"]
        assert queue.name in [q.name for q in Queue.all(connection=backend)]
        assert all(":" not in q.name for q in Queue.all(connection=backend))
        with pytest.raises(NoSuchGroupError):
            Group.fetch("no-such-group", connection=backend)
        work([queue], backend)
        assert jobs[1].get_status() == "finished" and jobs[1].result == 7

    def test_callback_timeout(self, backend, queue, path):
        self.needs(queue, "callback_timeout")
        job = queue.enqueue(tasks.add, 1, 2, on_success=Callback(tasks.slow_callback, timeout=1))
        nxt = queue.enqueue(tasks.add, 2, 2)
        started = time.monotonic()
        work([queue], backend)
        assert time.monotonic() - started < 15  # the 30 s callback was cut at 1 s
        assert job.get_status() == "finished" and job.result == 3
        assert nxt.result == 4

    def test_callback_timeout_accepts_rq_durations(self):
        assert Callback(tasks.add, timeout="2m").timeout == 120
        assert Callback(tasks.add).timeout == 60

    def _run_in_thread(self, backend, queue, name):
        w = Worker([queue], connection=backend, name=name)
        t = threading.Thread(target=w.work, kwargs={"burst": True})
        t.start()
        return t

    def test_stop_running_job(self, backend, queue, path):
        self.needs(queue, "commands")
        job = queue.enqueue(tasks.sleep, 30, on_stopped=tasks.on_stopped_record,
                            meta={"path": path}, retry=Retry(max=2))
        t = self._run_in_thread(backend, queue, f"{queue.name}-stopper")
        try:
            wait_until(lambda: job.get_status() == "started", message="job to start")
            started = time.monotonic()
            send_stop_job_command(backend, job.id)
            wait_until(lambda: job.get_status() != "started", message="job to stop")
            assert time.monotonic() - started < 10
        finally:
            t.join(60)
        assert job.get_status() == "stopped"  # never retried
        assert job.is_stopped and job.retries_left == 2
        assert "JobStoppedException" in job.exc_info
        assert job.latest_result().type == Result.Type.STOPPED
        assert Path(path).read_text().split() == ["stopped", job.id]
        assert job.requeue().get_status() == "queued"

    def test_stop_job_that_is_not_running_refused(self, backend, queue):
        self.needs(queue, "commands")
        job = queue.enqueue(tasks.add, 1, 2)
        with pytest.raises(InvalidJobOperation, match="not currently executing"):
            send_stop_job_command(backend, job.id)

    def test_shutdown_command_stops_idle_worker(self, backend, queue):
        self.needs(queue, "commands")
        w = Worker([queue], connection=backend, name=f"{queue.name}-down")
        t = threading.Thread(target=w.work)
        t.start()
        wait_until(lambda: w.name in [x.name for x in Worker.all(connection=backend)],
                   message="worker to register")
        send_shutdown_command(backend, w.name)
        t.join(15)
        assert not t.is_alive()

    def test_results_history_order_and_limit(self, backend, queue, path):
        self.needs(queue, "results")
        job = queue.enqueue(tasks.count_calls, path, repeat=Repeat(times=11))
        assert job.latest_result() is None and job.results() == []
        work([queue], backend)
        results = job.results()
        assert [r.return_value for r in results] == list(range(12, 2, -1))  # newest 10
        assert all(r.type == Result.Type.SUCCESSFUL for r in results)
        assert [r.created_at for r in results] == sorted((r.created_at for r in results),
                                                         reverse=True)
        assert job.latest_result() == results[0]

    def test_results_keep_failures_and_successes(self, backend, queue, path):
        self.needs(queue, "results")
        job = queue.enqueue(tasks.fail_until, path, 1, retry=Retry(max=1))
        work([queue], backend)
        kinds = [r.type for r in job.results()]
        assert kinds == [Result.Type.SUCCESSFUL, Result.Type.FAILED]
        assert "fail_until" in job.results()[1].exc_string

    def test_latest_result_waits_with_timeout(self, backend, queue):
        job = queue.enqueue(tasks.add, 2, 3)
        assert job.latest_result() is None
        t = self._run_in_thread(backend, queue, f"{queue.name}-later")
        try:
            result = job.latest_result(timeout=30)
        finally:
            t.join(30)
        assert result is not None and result.type == Result.Type.SUCCESSFUL
        assert result.return_value == 5 and result.exc_string is None

    def test_latest_result_of_failure(self, backend, queue):
        job = queue.enqueue(tasks.fail, "nope")
        work([queue], backend)
        result = job.latest_result()
        assert result.type == Result.Type.FAILED and "nope" in result.exc_string

    def test_retry_returned_from_job(self, backend, queue, path):
        self.needs(queue, "retry_result")
        job = queue.enqueue(tasks.retry_until, path, 3, max=5, interval=0)
        work([queue], backend)
        assert job.get_status() == "finished" and job.result == 3
        assert Path(path).read_text() == "xxx"
        if "results" in queue.backend.features:
            assert [r.type for r in job.results()] == [
                Result.Type.SUCCESSFUL, Result.Type.RETRIED, Result.Type.RETRIED]

    def test_retry_returned_from_job_with_interval_and_max(self, backend, queue, path):
        self.needs(queue, "retry_result")
        job = queue.enqueue(tasks.retry_until, path, 99, max=1, interval=1)
        work([queue], backend)
        if job.get_status() == "scheduled":  # a loaded machine may already have retried it
            advance(backend, 1)
            work([queue], backend)
        assert job.get_status() == "failed"
        assert Path(path).read_text() == "xx"  # the first call and one retry
        assert job in queue.failed_job_registry
        if "results" in queue.backend.features:
            assert job.latest_result().type == Result.Type.MAX_RETRIES_EXCEEDED

    def test_exception_handler_chain(self, backend, queue, path):
        if "exception_handlers" not in queue.backend.worker_options:
            with pytest.raises(NotSupportedError):
                Worker([queue], connection=backend, exception_handlers=[tasks.record_exception])
            return
        job = queue.enqueue(tasks.fail, meta={"path": path})
        work([queue], backend, exception_handlers=[
            tasks.record_exception, tasks.stop_chain, tasks.never_called])
        assert Path(path).read_text().split("\n")[:2] == ["handler1 ValueError", "handler2"]
        assert "handler3" not in Path(path).read_text()
        assert job.get_status() == "failed" and job in queue.failed_job_registry

    def test_disable_default_exception_handler(self, backend, queue, path):
        if "disable_default_exception_handler" not in queue.backend.worker_options:
            pytest.skip("backend refuses disable_default_exception_handler (NotSupportedError)")
        job = queue.enqueue(tasks.fail, meta={"path": path})
        work([queue], backend, exception_handlers=[tasks.record_exception],
             disable_default_exception_handler=True)
        assert job.get_status() == "failed"
        assert job not in queue.failed_job_registry
        assert Path(path).read_text().startswith("handler1 ValueError")

    def test_unknown_worker_option_is_a_type_error(self, backend, queue):
        with pytest.raises(TypeError, match="bogus"):
            Worker([queue], connection=backend, bogus=1)

    def test_job_create_and_enqueue_job(self, backend, queue):
        job = Job.create(tasks.add, args=(2, 3), connection=backend, id=f"{queue.name}-made")
        queue.enqueue_job(job)
        assert job.get_status() == "queued" and job.get_position() == 0
        other = queue.enqueue(tasks.add, 1, 1)
        assert other.get_position() == 1 and queue.get_job_position(other) == 1
        work([queue], backend)
        assert job.result == 5 and job.get_position() is None

    def test_enqueue_many_with_pipeline(self, backend, queue):
        with queue.connection.pipeline() as pipe:
            jobs = queue.enqueue_many(
                [Queue.prepare_data(tasks.add, (1, 2)), Queue.prepare_data(tasks.add, (3, 4))],
                pipeline=pipe,
            )
            assert len(queue) == 0
            pipe.execute()
        assert queue.get_job_ids() == [j.id for j in jobs]

    def test_registry_get_queue_and_worker_properties(self, backend, queue, tmp_path):
        assert queue.failed_job_registry.get_queue() == queue
        started, release = str(tmp_path / "started"), str(tmp_path / "release")
        job = queue.enqueue(tasks.touch_then_wait, started, release)
        w = SimpleWorker([queue], connection=backend, name=f"{queue.name}-props")
        t = threading.Thread(target=w.work, kwargs={"burst": True})
        t.start()
        try:
            wait_until(lambda: Path(started).exists(), message="job to start")

            def me():
                return next(x for x in Worker.all(connection=backend) if x.name == w.name)

            wait_until(lambda: me().state == "busy", message="worker state busy")
            found = me()
            assert found.get_current_job_id() == job.id
            assert found.birth_date is not None and found.hostname and found.pid
            assert job.last_heartbeat is not None
            if "commands" in queue.backend.features:
                [execution] = job.get_executions()
                assert execution.created_at == job.started_at and execution.last_heartbeat
        finally:
            Path(release).touch()
            t.join(30)
        assert job.get_executions() == [] and job.last_heartbeat is None
        assert w.successful_job_count == 1

    def test_json_serializer_class(self, backend, qname):
        q = Queue(qname, connection=backend, serializer=JSONSerializer)
        job = q.enqueue(tasks.add, 1, 2)
        assert job.serializer == "json"
        work([q], backend)
        assert job.result == 3

    def test_cancel_job_function(self, backend, queue):
        job = queue.enqueue(tasks.add, 1, 2)
        cancel_job(job.id, connection=backend)
        assert job.get_status() == "canceled"
