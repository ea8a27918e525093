"""Behaviour of plugq's features beyond RQ, on any backend.

Mixed into :class:`plugq.testing.conformance.BackendConformance`. A backend
that does not offer a feature must refuse it with ``NotSupportedError`` (never
ignore it silently); these tests check either the feature or the refusal.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from plugq import (
    JobStatus,
    ManualClock,
    NotSupportedError,
    Queue,
    RateLimit,
    Unique,
    Worker,
    cron,
    workflow,
)
from plugq.testing import tasks


def _lines(path: str) -> list[str]:
    p = Path(path)
    return p.read_text().splitlines() if p.exists() else []


class BeyondConformance:
    """Priority, unique keys, progress and cron, or their clear refusal."""

    @pytest.fixture
    def beyond_queue(self, backend) -> Queue:
        return Queue(f"b-{uuid.uuid4().hex[:8]}", connection=backend)

    @pytest.fixture
    def side(self, tmp_path) -> str:
        return str(tmp_path / f"side-{uuid.uuid4().hex[:6]}.txt")

    # -- priority -------------------------------------------------------------

    def test_priority_runs_higher_first_fifo_among_equals(self, beyond_queue, side):
        q = beyond_queue
        if "priority" not in q.backend.features:
            with pytest.raises(NotSupportedError, match="priority"):
                q.enqueue(tasks.append_line, side, "x", priority=1)
            return
        for text, prio in [("a0", 0), ("b5", 5), ("c-1", -1), ("d5", 5), ("e0", 0), ("f9", 9)]:
            q.enqueue(tasks.append_line, side, text, priority=prio)
        q.enqueue(tasks.append_line, side, "g5-front", priority=5, at_front=True)
        expected = ["f9", "g5-front", "b5", "d5", "a0", "e0", "c-1"]
        assert [j.args[1] for j in q.get_jobs()] == expected
        Worker([q], connection=q.backend).work(burst=True)
        assert _lines(side) == expected

    def test_priority_in_enqueue_many_and_validation(self, beyond_queue):
        q = beyond_queue
        if "priority" not in q.backend.features:
            return
        jobs = q.enqueue_many([Queue.prepare_data(tasks.add, (i, 0), priority=i)
                               for i in range(3)])
        assert q.get_job_ids() == [j.id for j in reversed(jobs)]
        with pytest.raises(ValueError, match="priority"):
            q.enqueue(tasks.add, 1, 2, priority="high")

    # -- unique keys ----------------------------------------------------------

    def test_unique_key_returns_the_pending_job(self, beyond_queue):
        q = beyond_queue
        if "unique_keys" not in q.backend.features:
            with pytest.raises(NotSupportedError, match=r"[Uu]nique"):
                q.enqueue(tasks.add, 1, 2, unique=Unique("k"))
            return
        first = q.enqueue(tasks.add, 1, 2, unique=Unique("report:1"))
        again = q.enqueue(tasks.add, 5, 5, unique=Unique("report:1"))
        other = q.enqueue(tasks.add, 1, 2, unique=Unique("report:2"))
        assert again.id == first.id and again.args == (1, 2)
        assert other.id != first.id
        assert q.count == 2
        Worker([q], connection=q.backend).work(burst=True)
        assert first.get_status() == JobStatus.FINISHED
        after = q.enqueue(tasks.add, 1, 2, unique=Unique("report:1"))
        assert after.id != first.id  # the default only blocks while one is pending

    def test_unique_key_holds_for_scheduled_and_deferred_jobs(self, beyond_queue):
        q = beyond_queue
        if "unique_keys" not in q.backend.features:
            return
        later = q.enqueue_in(timedelta(hours=1), tasks.add, 1, 1, unique=Unique("sched"))
        assert later.get_status() == JobStatus.SCHEDULED
        assert q.enqueue(tasks.add, 1, 1, unique=Unique("sched")).id == later.id
        parent = q.enqueue(tasks.add, 2, 2)
        child = q.enqueue(tasks.add, 3, 3, depends_on=parent, unique=Unique("dep"))
        assert child.get_status() == JobStatus.DEFERRED
        assert q.enqueue(tasks.add, 3, 3, depends_on=parent, unique=Unique("dep")).id == child.id
        Worker([q], connection=q.backend).work(burst=True)
        assert child.get_status() == JobStatus.FINISHED and child.result == 6

    def test_unique_key_for_a_period(self, backend, beyond_queue):
        q = beyond_queue
        if "unique_keys" not in q.backend.features:
            return
        once = Unique("digest", period=1)  # once a second, whatever the status
        first = q.enqueue(tasks.add, 1, 1, unique=once)
        Worker([q], connection=q.backend).work(burst=True)
        assert first.get_status() == JobStatus.FINISHED
        assert q.enqueue(tasks.add, 1, 1, unique=once).id == first.id
        if isinstance(backend.clock, ManualClock):
            backend.clock.advance(1.0)
        else:
            time.sleep(1.05)
        assert q.enqueue(tasks.add, 1, 1, unique=once).id != first.id

    # -- progress -------------------------------------------------------------

    def test_progress_reported_by_the_task_is_read_by_the_producer(self, beyond_queue):
        q = beyond_queue
        job = q.enqueue(tasks.progress_steps, 4)
        if "progress" not in q.backend.features:
            with pytest.raises(NotSupportedError):
                job.set_progress(0.5)
            assert job.progress is None
            return
        assert job.progress is None
        Worker([q], connection=q.backend).work(burst=True)
        assert job.get_status() == JobStatus.FINISHED
        progress = job.progress
        assert progress is not None
        assert (progress.done, progress.total, progress.fraction, progress.message) == (
            4, 4, 1.0, "step 4")
        job.set_progress(0.25, message="by hand")
        assert job.progress.fraction == 0.25
        with pytest.raises(ValueError):
            job.set_progress(1.5)

    # -- cron -----------------------------------------------------------------

    def test_cron_schedulers_enqueue_each_tick_once(self, backend, beyond_queue):
        q = beyond_queue
        entry = cron.CronEntry(name=f"t-{uuid.uuid4().hex[:6]}", func_name="plugq.testing.tasks.add",
                               queue_name=q.name, args=(1, 2), interval=1.0)
        if "values" not in q.backend.features:
            with pytest.raises(NotSupportedError, match="cron"):
                cron.Scheduler(q.backend, [entry])
            return
        schedulers = [cron.Scheduler(q.backend, [entry]) for _ in range(3)]
        made = [job for s in schedulers for job in s.tick()]
        assert len(made) == 1  # a new interval entry runs at once, once
        for _ in range(3):
            if isinstance(backend.clock, ManualClock):
                backend.clock.advance(1.0)
            else:
                time.sleep(1.05)
            made += [job for s in schedulers for job in s.tick()]
        assert len(made) == 4
        assert len({j.meta["cron_tick"] for j in made}) == 4
        assert q.count == 4
        [state] = [e for e in cron.status(q.backend) if e["name"] == entry.name]
        assert state["last_job_id"] == made[-1].id
        assert state["next_run"] > state["last_run"]

    # -- rate limits ----------------------------------------------------------

    def test_rate_limit_concurrency_holds_jobs_rate_limited_in_line(self, beyond_queue, tmp_path):
        import threading

        q = beyond_queue
        key = f"k-{uuid.uuid4().hex[:6]}"
        if "rate_limit" not in q.backend.features:
            with pytest.raises(NotSupportedError, match="RateLimit"):
                q.enqueue(tasks.add, 1, 2, rate_limit=RateLimit(key, concurrency=1))
            return
        gate = str(tmp_path / f"gate-{key}")
        first = q.enqueue(tasks.wait_for_file, gate, rate_limit=RateLimit(key, concurrency=1))
        runner = threading.Thread(
            target=lambda: Worker([q], connection=q.backend, name=f"{key}-1").work(burst=True))
        runner.start()
        try:
            end = time.monotonic() + 15
            while first.get_status() != JobStatus.STARTED:
                assert time.monotonic() < end, "the first job never started"
                time.sleep(0.01)
            second = q.enqueue(tasks.add, 1, 1, rate_limit=RateLimit(key, concurrency=1))
            third = q.enqueue(tasks.add, 2, 2, rate_limit=RateLimit(key, concurrency=1))
            free = q.enqueue(tasks.add, 3, 3)
            Worker([q], connection=q.backend, name=f"{key}-2").work(burst=True)
            assert second.get_status() == JobStatus.RATE_LIMITED
            assert third.get_status() == JobStatus.RATE_LIMITED
            assert free.get_status() == JobStatus.FINISHED  # other jobs are not held up
            assert q.backend.job_ids(q.name, JobStatus.RATE_LIMITED) == [second.id, third.id]
        finally:
            Path(gate).touch()
            runner.join(timeout=30)
        Worker([q], connection=q.backend, name=f"{key}-3").work(burst=True)
        assert [j.get_status() for j in (first, second, third)] == [JobStatus.FINISHED] * 3
        assert (second.result, third.result) == (2, 4)

    def test_rate_limit_per_period(self, backend, beyond_queue):
        q = beyond_queue
        if "rate_limit" not in q.backend.features:
            return
        limit = RateLimit(f"k-{uuid.uuid4().hex[:6]}", limit=2, period=1)
        jobs = [q.enqueue(tasks.add, i, 0, rate_limit=limit) for i in range(3)]
        Worker([q], connection=q.backend).work(burst=True)
        assert [j.get_status() for j in jobs] == [JobStatus.FINISHED] * 2 + [
            JobStatus.RATE_LIMITED]
        if isinstance(backend.clock, ManualClock):
            backend.clock.advance(1.0)
        else:
            time.sleep(1.05)
        q.backend.maintenance()
        Worker([q], connection=q.backend).work(burst=True)
        assert jobs[2].get_status() == JobStatus.FINISHED
        with pytest.raises(ValueError):
            RateLimit("k")
        with pytest.raises(ValueError):
            RateLimit("k", limit=2)

    # -- workflows ------------------------------------------------------------

    def test_chain_passes_each_result_to_the_next_step(self, beyond_queue):
        q = beyond_queue
        steps = [Queue.prepare_data(tasks.add, (1, 2)), Queue.prepare_data(tasks.add, (10,)),
                 Queue.prepare_data(tasks.add, (100,))]
        if "workflows" not in q.backend.features:
            with pytest.raises(NotSupportedError):
                workflow.chain(q, steps)
            return
        jobs = workflow.chain(q, steps)
        assert [j.get_status() for j in jobs] == [JobStatus.QUEUED] + [JobStatus.DEFERRED] * 2
        Worker([q], connection=q.backend).work(burst=True)
        assert [j.return_value() for j in jobs] == [3, 13, 113]

    def test_a_failed_step_cancels_the_rest_of_its_chain(self, beyond_queue):
        q = beyond_queue
        if "workflows" not in q.backend.features:
            return
        jobs = workflow.chain(q, [Queue.prepare_data(tasks.add, (1, 2)),
                                  Queue.prepare_data(tasks.fail),
                                  Queue.prepare_data(tasks.add, (1,)),
                                  Queue.prepare_data(tasks.add, (2,))])
        Worker([q], connection=q.backend).work(burst=True)
        assert [j.get_status() for j in jobs] == [
            JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.CANCELED]
        assert "chain" in (jobs[2].exc_info or "")

    def test_group_callback_runs_once_with_every_members_result(self, beyond_queue):
        q = beyond_queue
        if "workflows" not in q.backend.features:
            return
        jobs = workflow.group(
            q, [Queue.prepare_data(tasks.add, (i, i)) for i in range(3)]
            + [Queue.prepare_data(tasks.fail)],
            on_complete=Queue.prepare_data(tasks.summarize, kwargs={"label": "done"}),
        )
        callback = jobs[-1]
        assert len(jobs) == 5
        assert callback.get_status() == JobStatus.DEFERRED
        Worker([q], connection=q.backend).work(burst=True)
        assert callback.get_status() == JobStatus.FINISHED
        assert callback.return_value() == [
            "done", ["finished", 0], ["finished", 2], ["finished", 4], ["failed", None]]
        assert q.finished_job_registry.get_job_ids().count(callback.id) == 1
