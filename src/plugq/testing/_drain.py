"""``drain()``: run the jobs a test enqueued, in this process, then return."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from plugq import plugins
from plugq.backend import Backend
from plugq.connection import resolve_connection
from plugq.exceptions import NoSuchJobError
from plugq.hookspecs import hookimpl
from plugq.job import Job
from plugq.queue import Queue
from plugq.worker import Worker

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class _Recorder:
    """A plugq plugin, registered for one ``drain()``, that sees its worker's jobs."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.order: list[str] = []
        self.jobs: dict[str, Job] = {}
        self.failure: ExcInfo | None = None
        self.stop_on_failure = False
        self._lock = threading.Lock()

    def _mine(self, worker: Any) -> bool:
        return worker is self.worker or getattr(worker, "name", None) == self.worker.name

    @hookimpl
    def plugq_job_started(self, job: Job, worker: Any) -> None:
        if self._mine(worker):
            with self._lock:
                self.order.append(job.id)
                self.jobs[job.id] = job

    @hookimpl
    def plugq_job_failed(self, job: Job, exc_info: ExcInfo) -> None:
        with self._lock:
            if job.id not in self.jobs or self.failure is not None:
                return
        # Only a final failure counts: an attempt that will be retried is
        # the job working as designed, not a failure of the job.
        try:
            final = job.get_status().value == "failed"
        except NoSuchJobError:  # failure_ttl=0 deleted it: nothing will retry it
            final = True
        if final:
            with self._lock:
                self.failure = exc_info
            if self.stop_on_failure:
                self.worker.request_stop()


def _targets(
    queue_or_backend: Queue | Sequence[Queue] | Backend | str | None,
) -> tuple[Backend, list[Queue] | None]:
    if isinstance(queue_or_backend, Queue):
        return queue_or_backend.backend, [queue_or_backend]
    if isinstance(queue_or_backend, (list, tuple)):
        queues = list(queue_or_backend)
        if not queues or not all(isinstance(q, Queue) for q in queues):
            raise TypeError("drain() takes a Queue, a list of Queues or a backend")
        return queues[0].backend, queues
    return resolve_connection(queue_or_backend), None


def drain(
    queue_or_backend: Queue | Sequence[Queue] | Backend | str | None = None,
    *,
    max_jobs: int | None = None,
    raise_failures: bool = False,
) -> list[Job]:
    """Run a burst worker here until nothing is runnable; return the jobs it ran.

    The worker is the production one (``Worker.work(burst=True,
    with_scheduler=True)``), so retries, timeouts, callbacks, dependencies
    and TTLs behave as in production; its scheduler first enqueues every
    scheduled job that is due on the backend's clock. A job scheduled for
    later (a retry interval, ``enqueue_in``) is not runnable: move the clock
    (``plugq_clock.advance``) and drain again.

    Parameters:
        queue_or_backend: a :class:`~plugq.Queue` or list of queues (taken in
            that priority order), a backend or URL (every queue on it, until
            none has work, including queues that jobs enqueue to meanwhile),
            or None for the default backend.
        max_jobs: stop after running this many jobs.
        raise_failures: re-raise, in the caller, the exception of the first
            job that ends ``failed`` (not an attempt that will be retried),
            with its original type, message and traceback. The worker stops
            after that job; the job stays in the failed registry.

    Returns:
        The jobs run, in the order they started, refreshed after the drain. A
        job that ran several times (retried without an interval) appears once
        per run. A job deleted meanwhile (``result_ttl=0``) is returned as
        last seen.

    Raises:
        BaseException: with ``raise_failures``, the failed job's exception.
        AssertionError: with ``raise_failures``, a job failed in a worker
            process this one cannot see into; the message holds its traceback.

    On the RQ backend the worker is rq's ``SimpleWorker`` (jobs run in this
    process) so the lifecycle hooks that record the jobs are seen here.
    """
    if max_jobs is not None and max_jobs < 1:
        raise ValueError(f"max_jobs={max_jobs!r} must be >= 1 (or None for no limit)")
    backend, queues = _targets(queue_or_backend)
    ran: list[Job] = []
    failure: ExcInfo | None = None
    while True:
        if queues is not None:
            names: list[str] = [q.name for q in queues]
        else:
            names = backend.queue_names()
            if not names:
                break
        remaining = None if max_jobs is None else max_jobs - len(ran)
        worker = Worker(
            list(queues) if queues is not None else names,
            connection=backend,
            name=f"plugq-drain-{uuid.uuid4().hex[:8]}",
            worker_class="simple",
        )
        recorder = _Recorder(worker)
        recorder.stop_on_failure = raise_failures
        plugin_name = f"plugq-testing-drain-{uuid.uuid4().hex}"
        plugins.register(recorder, name=plugin_name)
        try:
            processed = worker.work(burst=True, max_jobs=remaining, with_scheduler=True)
        finally:
            plugins.unregister(name=plugin_name)
        ran.extend(recorder.jobs[job_id] for job_id in recorder.order)
        failure = recorder.failure
        if processed and not recorder.order:
            raise RuntimeError(
                f"drain(): the worker on {backend.safe_url()} ran jobs but reported none through "
                "the plugq_job_started hook; this backend does not call the lifecycle hooks"
            )
        if failure is not None or (max_jobs is not None and len(ran) >= max_jobs):
            break
        if queues is not None:
            break
        # Draining a whole backend: the burst ended because no watched queue
        # had runnable work, but a job may have enqueued to a queue that did
        # not exist when the worker started; go round again for those.
        if set(backend.queue_names()) <= set(names):
            break

    for job in {id(j): j for j in ran}.values():
        with contextlib.suppress(NoSuchJobError):
            job.refresh()
    if raise_failures and failure is not None:
        __tracebackhide__ = True
        raise failure[1].with_traceback(_task_frames(failure[2]))
    if raise_failures:
        _raise_unseen_failure(ran)
    return ran


def plumbing_prefixes() -> tuple[str, ...]:
    """Path prefixes of the worker's machinery (plugq's private modules, rq, plugq_rq).

    Frames from these files are left out of what the testing helpers show, so
    a failure reads from the task's own code.
    """
    import plugq

    prefixes = [os.path.join(os.path.dirname(plugq.__file__), "_")]
    for name in ("rq", "plugq_rq"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if module.__file__:
            prefixes.append(os.path.dirname(module.__file__) + os.sep)
    return tuple(prefixes)


def _task_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the first frame outside the worker's machinery on."""
    prefixes = plumbing_prefixes()
    start = tb
    while start is not None and start.tb_frame.f_code.co_filename.startswith(prefixes):
        start = start.tb_next
    return start or tb


def _raise_unseen_failure(ran: list[Job]) -> None:
    """A job ended failed but no exception object reached this process."""
    __tracebackhide__ = True
    for job in ran:
        record = job.record
        if record.status.value == "failed":
            raise AssertionError(
                f"job {job.id} ({job.description}) failed:\n{record.exc_info or '(no traceback)'}"
            )
