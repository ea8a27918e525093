"""The worker loop of every :class:`~plugq.backend.StorageBackend`, and sync mode.

``perform`` is the one path a job takes to run, used by the loop and by
``Queue(is_async=False)`` alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from . import _lifecycle
from ._context import _current
from ._execution import call, format_exc_info, install_alarm_handler
from ._record import JobRecord, WorkerRecord
from ._status import JobStatus
from .config import current_settings
from .job import Job
from .plugins import hook
from .security import UntrustedJobError, resolve_allowed, seal_blob, verified_payload
from .serializers import get_serializer

if TYPE_CHECKING:
    from .backend import StorageBackend
    from .worker import Worker

log = logging.getLogger("plugq.worker")

#: Real seconds between maintenance passes while the worker is busy.
MAINTENANCE_EVERY = 1.0
#: Longest idle wait before the loop looks again (schedules, stop requests).
IDLE_WAIT = 1.0
#: Shortest gap between two writes of a worker's state (job start/end) to the backend.
STATE_WRITE_GAP = 0.1


def _run_callback(path: str, *args: Any) -> None:
    try:
        # The allow-list check of the function applies to callbacks alike.
        resolve_allowed(path, current_settings().allowed_modules)(*args)
    except Exception:
        # A callback's failure must not change the job's outcome (RQ logs it too).
        log.exception("callback %s failed", path)


def perform(backend: StorageBackend, rec: JobRecord, worker: Worker | None) -> JobRecord:
    """Run a started job and store its outcome. Returns the record as stored."""
    job = Job(backend, rec)
    caller = hook()
    if worker is not None and caller.plugq_job_started.get_hookimpls():
        caller.plugq_job_started(job=job, worker=worker)
    token = _current.set(job)
    serializer = get_serializer(rec.serializer)
    try:
        settings = current_settings()
        data = verified_payload(rec, settings=settings)  # before anything is imported or read
        func = resolve_allowed(rec.func_name, settings.allowed_modules)
        args, kwargs = serializer.loads(data)
        value = call(func, args, kwargs, rec.timeout)
        result = seal_blob(rec.id, "result", serializer.dumps(value))
    except (Exception, SystemExit) as exc:
        exc_info = format_exc_info(exc)
        _lifecycle.fail(backend, rec, exc_info)
        # The whole traceback, as rq's worker logs it on the Redis backend:
        # the log is where a user looks first (--logging-level CRITICAL hides it).
        log.error("%s: %s failed (%s): %s\n%s", rec.origin, rec.id, rec.status.value,
                  exc_info.strip().splitlines()[-1], exc_info.rstrip())
        if rec.on_failure and not isinstance(exc, UntrustedJobError):
            _run_callback(rec.on_failure, job, backend, type(exc), exc, exc.__traceback__)
        if caller.plugq_job_failed.get_hookimpls():
            caller.plugq_job_failed(job=job, exc_info=(type(exc), exc, exc.__traceback__))
        if worker is not None:
            worker.failed_job_count += 1
    else:
        if _lifecycle.finish(backend, rec, result):
            log.info("%s: Job OK (%s)", rec.origin, rec.id)
            if rec.result_ttl == 0:
                log.info("Result discarded immediately")
            elif rec.result_ttl < 0:
                log.info("Result will never expire, clean up result key manually")
            else:
                log.info("Result is kept for %s seconds", rec.result_ttl)
        if rec.on_success:
            _run_callback(rec.on_success, job, backend, value)
        if caller.plugq_job_finished.get_hookimpls():
            caller.plugq_job_finished(job=job, result=value)
        if worker is not None:
            worker.successful_job_count += 1
    finally:
        _current.reset(token)
    return rec


class WorkerLoop:
    """One worker's run on one backend."""

    def __init__(self, backend: StorageBackend, worker: Worker) -> None:
        self.backend = backend
        self.worker = worker
        self.queues = worker.queue_names()
        self._state = "idle"
        self._current: str | None = None
        self._beat_stop = threading.Event()
        # Set when a job starts or ends: the heartbeat thread then writes the
        # state, current job and counters at once, so `plugq info` is live.
        self._changed = threading.Event()
        # True from a change until the heartbeat thread takes it: the job path
        # sets the Event (a lock and a notify) once per write, not once per job.
        self._dirty = False
        # One write at a time, each of the state as it is when written: the
        # loop's own beat and the heartbeat thread's must not cross.
        self._beat_lock = threading.Lock()
        self._last_beat = 0.0

    def _beat(self) -> None:
        with self._beat_lock:
            self._last_beat = self.backend.clock.now()
            self.backend.heartbeat(
                self.worker.name, self._last_beat, state=self._state,
                current_job_id=self._current, successful=self.worker.successful_job_count,
                failed=self.worker.failed_job_count,
            )

    def _state_changed(self, state: str, current: str | None) -> None:
        self._state, self._current = state, current
        if not self._dirty:
            self._dirty = True
            self._changed.set()

    def _beat_forever(self) -> None:
        interval = max(0.05, min(self.backend.lease / 3.0, 5.0))
        while not self._beat_stop.is_set():
            self._changed.wait(interval)
            if self._beat_stop.is_set():
                break
            # Clear, then reset the flag: a change in between is not lost (its
            # values are read by the write below).
            self._changed.clear()
            self._dirty = False
            try:
                self._beat()
            except Exception:
                log.exception("heartbeat failed; will retry")
            # The write happens off the job path, in this thread, and a run of
            # short jobs is coalesced into at most one write per STATE_WRITE_GAP:
            # a worker doing thousands of jobs a second pays for ~10 writes.
            self._beat_stop.wait(STATE_WRITE_GAP)

    def _register(self) -> None:
        b = self.backend
        now = b.clock.now()
        for other in b.list_workers():
            if other.name == self.worker.name and other.last_heartbeat + b.lease > now:
                raise ValueError(
                    f"There exists an active worker named {self.worker.name!r} already"
                )
        b.register_worker(
            WorkerRecord(
                name=self.worker.name, queues=list(self.queues), pid=os.getpid(),
                hostname=socket.gethostname(), birth=now, last_heartbeat=now,
            )
        )
        self._last_beat = now

    def _maintain(self, scheduler: bool) -> None:
        _lifecycle.maintenance(self.backend, scheduler=scheduler, me=self.worker.name)

    def run(self, *, burst: bool, max_jobs: int | None, with_scheduler: bool) -> bool:
        b = self.backend
        self._register()
        beater = threading.Thread(target=self._beat_forever, name="plugq-heartbeat", daemon=True)
        beater.start()
        processed = 0
        log.info("Worker %s started on %s, queues: %s", self.worker.name, b.safe_url(),
                 ", ".join(self.queues))
        restore_alarm = install_alarm_handler()
        try:
            self._maintain(with_scheduler)
            last_maint = time.monotonic()
            while not self.worker.stop_requested:
                if time.monotonic() - last_maint > MAINTENANCE_EVERY:
                    self._maintain(with_scheduler)
                    last_maint = time.monotonic()
                if b.clock.now() - self._last_beat > b.lease / 3.0:
                    self._beat()
                rec = b.claim(self.queues, self.worker.name, b.clock.now())
                if rec is None:
                    # Nothing runnable: let the scheduler and the reaper look
                    # before deciding the queues are really empty.
                    self._maintain(with_scheduler)
                    last_maint = time.monotonic()
                    rec = b.claim(self.queues, self.worker.name, b.clock.now())
                if rec is None:
                    if burst:
                        break
                    b.wait(self.queues, IDLE_WAIT)
                    continue
                self._state_changed("busy", rec.id)
                log.info("%s: %s (%s)", rec.origin, rec.description, rec.id)
                started = time.monotonic()
                perform(b, rec, self.worker)
                self.worker.total_working_time += time.monotonic() - started
                self._state_changed("idle", None)
                processed += 1
                if max_jobs is not None and processed >= max_jobs:
                    break
        finally:
            restore_alarm()
            self._beat_stop.set()
            self._changed.set()
            b.unregister_worker(self.worker.name)
            log.info("Worker %s stopped after %d job(s)", self.worker.name, processed)
        return processed > 0


def run_sync(backend: StorageBackend, rec: JobRecord) -> JobRecord:
    """``Queue(is_async=False)``: enqueue, then run here through :func:`perform`."""
    stored = _lifecycle.enqueue(backend, [rec], unique=False)[0]
    if stored.status is not JobStatus.QUEUED:
        return backend.get(stored.id) or stored
    name = f"sync.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}"
    now = backend.clock.now()
    backend.register_worker(
        WorkerRecord(name=name, queues=[rec.origin], pid=os.getpid(),
                     hostname=socket.gethostname(), birth=now, last_heartbeat=now)
    )
    try:
        while True:
            current = backend.get(stored.id)
            if current is None:
                return stored
            if current.status is JobStatus.SCHEDULED and current.scheduled_for is not None:
                # A retry interval: wait it out on the backend's clock (a manual
                # clock just moves forward).
                backend.clock.sleep(current.scheduled_for - backend.clock.now())
                _lifecycle.promote(backend, current.id, JobStatus.SCHEDULED)
                continue
            if current.status is not JobStatus.QUEUED:
                return current
            now = backend.clock.now()
            backend.heartbeat(name, now, state="busy", current_job_id=current.id)
            current.status = JobStatus.STARTED
            current.started_at = now
            current.worker_name = name
            current.expires_at = None
            current.attempts += 1
            if not backend.put(current, expected={JobStatus.QUEUED}):
                continue  # a worker took it first; look again
            perform(backend, current, None)
    finally:
        backend.unregister_worker(name)


