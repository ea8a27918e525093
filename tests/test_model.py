"""A stateful property test: random operation sequences against a reference model.

Hypothesis drives enqueue / run-one / fail / requeue / cancel / schedule /
advance-clock through the public API and compares every job's status, the
queue order and the registry counts with a small model of RQ's states.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from plugq import InvalidJobOperation, JobStatus, ManualClock, Queue, Worker
from plugq.testing import tasks
from plugq_memory import MemoryStorage

S = JobStatus


def make_machine(factory, manual_time: bool = True):
    """A state machine over ``factory()``'s backend; time rules need a ManualClock."""

    class QueueModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.backend = factory()
            self.q = Queue(f"model-{uuid.uuid4().hex[:6]}", connection=self.backend)
            self.status: dict[str, JobStatus] = {}
            self.order: list[str] = []  # the queue, front first
            self.due_at: dict[str, float] = {}
            self.now = 0.0
            self.will_fail: dict[str, bool] = {}

        # Integer seconds on an integer start keep due times exact, so ties in
    # due time compare as the model expects.

    # -- rules ------------------------------------------------------------

        @rule(fails=st.booleans(), front=st.booleans())
        def enqueue(self, fails: bool, front: bool) -> None:
            f = tasks.fail if fails else tasks.add
            args = () if fails else (1, 2)
            job = self.q.enqueue(f, *args, at_front=front)
            self.status[job.id] = S.QUEUED
            self.will_fail[job.id] = fails
            if front:
                self.order.insert(0, job.id)
            else:
                self.order.append(job.id)

        @precondition(lambda self: manual_time)
        @rule(delay=st.integers(min_value=1, max_value=100), fails=st.booleans())
        def schedule(self, delay: int, fails: bool) -> None:
            f = tasks.fail if fails else tasks.add
            args = () if fails else (1, 2)
            job = self.q.enqueue_in(timedelta(seconds=delay), f, *args)
            self.status[job.id] = S.SCHEDULED
            self.due_at[job.id] = self.now + delay
            self.will_fail[job.id] = fails

        @precondition(lambda self: manual_time)
        @rule(seconds=st.integers(min_value=1, max_value=60))
        def advance(self, seconds: int) -> None:
            self.backend.clock.advance(seconds)
            self.now += seconds

        @rule()
        def run_one(self) -> None:
            # The scheduler runs first (due jobs join the back of the queue in
            # due order), then the worker takes the front job.
            due = sorted((t, j) for j, t in self.due_at.items()
                         if self.status[j] is S.SCHEDULED and t <= self.now)
            for _, job_id in due:
                self.status[job_id] = S.QUEUED
                self.order.append(job_id)
                del self.due_at[job_id]
            Worker([self.q], connection=self.backend).work(burst=True, max_jobs=1)
            if self.order:
                job_id = self.order.pop(0)
                self.status[job_id] = S.FAILED if self.will_fail[job_id] else S.FINISHED

        @precondition(lambda self: bool(self.status))
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(list(self.status)))
            job = self.q.fetch_job(job_id)
            assert job is not None
            if self.status[job_id] in (S.CANCELED, S.FINISHED):
                with pytest.raises(InvalidJobOperation):
                    job.cancel()
                return
            job.cancel()
            if job_id in self.order:
                self.order.remove(job_id)
            self.due_at.pop(job_id, None)
            self.status[job_id] = S.CANCELED

        @precondition(lambda self: bool(self.status))
        @rule(data=st.data(), front=st.booleans())
        def requeue(self, data: st.DataObject, front: bool) -> None:
            job_id = data.draw(st.sampled_from(list(self.status)))
            job = self.q.fetch_job(job_id)
            assert job is not None
            if self.status[job_id] not in (S.FAILED, S.CANCELED):
                with pytest.raises(InvalidJobOperation):
                    job.requeue()
                return
            job.requeue(at_front=front)
            self.status[job_id] = S.QUEUED
            if front:
                self.order.insert(0, job_id)
            else:
                self.order.append(job_id)

        def teardown(self) -> None:
            self.backend.close()
            folder = getattr(self.backend, "path", None)
            if folder is not None:
                import shutil
                from pathlib import Path

                shutil.rmtree(Path(folder).parent, ignore_errors=True)

        # -- invariants --------------------------------------------------------

        @invariant()
        def statuses_match(self) -> None:
            for job_id, expected in self.status.items():
                job = self.q.fetch_job(job_id)
                assert job is not None, job_id
                assert job.get_status() is expected, (job_id, job.get_status(), expected)

        @invariant()
        def queue_order_matches(self) -> None:
            assert self.q.get_job_ids() == self.order

        @invariant()
        def registry_counts_match(self) -> None:
            for status, registry in (
                (S.FINISHED, self.q.finished_job_registry),
                (S.FAILED, self.q.failed_job_registry),
                (S.SCHEDULED, self.q.scheduled_job_registry),
                (S.CANCELED, self.q.canceled_job_registry),
                (S.STARTED, self.q.started_job_registry),
            ):
                expected = sum(1 for s in self.status.values() if s is status)
                assert registry.count == expected, (status, registry.count, expected)

    return QueueModel


MemoryModel = make_machine(
    lambda: MemoryStorage(f"memory://model-{uuid.uuid4().hex}", clock=ManualClock(start=1e9))
)
TestMemoryModel = MemoryModel.TestCase
TestMemoryModel.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


def _sqlite_factory():
    import tempfile

    from plugq_sqlite import SqliteStorage

    folder = tempfile.mkdtemp(prefix="plugq-model-")
    return SqliteStorage(f"sqlite:///{folder}/model.db", clock=ManualClock(start=1e9))


SqliteModel = make_machine(_sqlite_factory)
TestSqliteModel = SqliteModel.TestCase
TestSqliteModel.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)


def _run_redis_model(url: str, examples: int) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    from plugq_rq.storage import RedisStorage

    machine = make_machine(lambda: RedisStorage(url), manual_time=False)
    run_state_machine_as_test(
        machine, settings=settings(max_examples=examples, stateful_step_count=20, deadline=None)
    )


def test_fakeredis_model():
    _run_redis_model(f"fakeredis://model-{uuid.uuid4().hex}?worker_class=simple", 25)


def test_redis_model(redis_server):
    redis_server.flushall()
    _run_redis_model(redis_server.url + "?worker_class=simple", 15)
