"""``Worker``: takes jobs from its queues, in the order given, and runs them."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._clock import to_datetime
from .backend import Backend, WorkerSpec
from .config import pinned_settings
from .exceptions import NotSupportedError
from .queue import Queue
from .security import pinned_secret_key
from .storage import WorkerRecord

#: Every keyword argument of rq 2.x's ``Worker``; a backend honours those in
#: its ``worker_options`` and refuses the others with NotSupportedError.
RQ_WORKER_KWARGS = frozenset({
    "default_result_ttl", "connection_class", "job_class", "queue_class",
    "log_job_description", "job_monitoring_interval", "disable_default_exception_handler",
    "prepare_for_work", "serializer", "work_horse_killed_handler", "exception_handlers",
    "worker_ttl", "default_worker_ttl", "maintenance_interval", "exc_handler",
})
#: rq options that change nothing observable when left at rq's default.
_HARMLESS = {"prepare_for_work": True, "log_job_description": True, "serializer": None,
             "exception_handlers": None, "disable_default_exception_handler": False,
             "work_horse_killed_handler": None, "job_class": None, "queue_class": None,
             "connection_class": None}


class WorkerStatus:
    """A worker's ``state``, as rq's ``WorkerStatus`` (plain strings)."""

    STARTED = "started"
    SUSPENDED = "suspended"
    BUSY = "busy"
    IDLE = "idle"


class Worker:
    """RQ's ``Worker([queues], connection=…, name=…)``; ``work()`` runs it.

    On the memory and SQLite backends jobs run in this process (as RQ's
    SimpleWorker); the RQ backend runs rq's own worker classes.
    """

    def __init__(
        self,
        queues: Sequence[Queue | str] | Queue | str = ("default",),
        connection: Any = None,
        name: str | None = None,
        *,
        worker_class: str | None = None,
        **kwargs: Any,
    ) -> None:
        from .connection import resolve_connection

        worker_class = worker_class or self._worker_class
        unknown = sorted(set(kwargs) - RQ_WORKER_KWARGS)
        if unknown:
            raise TypeError(f"Worker() got unexpected keyword argument(s): {', '.join(unknown)}")
        if kwargs.get("exc_handler") is not None:
            kwargs.setdefault("exception_handlers", [kwargs["exc_handler"]])
        kwargs.pop("exc_handler", None)
        handlers = kwargs.get("exception_handlers")
        if handlers is not None and callable(handlers):
            kwargs["exception_handlers"] = [handlers]

        if isinstance(queues, (Queue, str)):
            queues = [queues]
        queues = list(queues)
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if connection is None:
            first = next((q for q in queues if isinstance(q, Queue)), None)
            backend: Backend = first.backend if first is not None else resolve_connection(None)
        else:
            backend = resolve_connection(connection)
        self.backend = backend
        self.connection = backend
        self.queues: list[Queue] = [
            q if isinstance(q, Queue) else Queue(q, connection=backend) for q in queues
        ]
        for q in self.queues:
            if q.backend is not backend:
                raise ValueError(
                    f"queue {q.name!r} is on {q.backend.safe_url()} but the worker is on "
                    f"{backend.safe_url()}; one worker serves one backend"
                )
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        #: rq worker class for the RQ backend: 'fork' (default), 'simple' or 'spawn'.
        self.worker_class = worker_class
        refused = sorted(
            k for k, v in kwargs.items()
            if k not in backend.worker_options and not (k in _HARMLESS and v == _HARMLESS[k])
        )
        if refused:
            raise NotSupportedError(
                f"Worker option(s) {', '.join(refused)} not supported by "
                f"{type(backend).__name__} ({backend.safe_url()})"
            )
        if kwargs.get("serializer") is not None:
            from .serializers import get_serializer

            get_serializer(kwargs["serializer"])  # each job carries its serializer; check the name
        self.options = kwargs
        self.log = logging.getLogger("plugq.worker")
        self._record: WorkerRecord | None = None
        # What the backend runs: plain data; the counters live in its stats.
        self._spec = WorkerSpec(
            name=self.name, queues=self.queue_names(), worker_class=worker_class,
            options=kwargs, hook_worker=self,
        )

    _worker_class: str | None = None

    @classmethod
    def _from_record(cls, backend: Backend, rec: WorkerRecord) -> Worker:
        w = cls.__new__(cls)
        w.backend = w.connection = backend
        w.queues = [Queue(q, connection=backend) for q in rec.queues]
        w.name = rec.name
        w.worker_class = None
        w.options = {}
        w.log = logging.getLogger("plugq.worker")
        w._spec = WorkerSpec(name=rec.name, queues=list(rec.queues), hook_worker=w)
        w._spec.stats.successful = rec.successful_jobs
        w._spec.stats.failed = rec.failed_jobs
        w._record = rec
        return w

    @property
    def record(self) -> WorkerRecord | None:
        """The worker as the backend lists it (as read by ``Worker.all()``; None if never read)."""
        return self._record

    def _live(self) -> WorkerRecord | None:
        """This worker's registered record (None when not registered)."""
        for rec in self.backend.workers():
            if rec.name == self.name:
                self._record = rec
                return rec
        return self._record

    @property
    def key(self) -> str:
        return f"rq:worker:{self.name}"

    @property
    def hostname(self) -> str:
        rec = self._record or self._live()
        return rec.hostname if rec else socket.gethostname()

    @property
    def pid(self) -> int:
        rec = self._record or self._live()
        return rec.pid if rec else os.getpid()

    @property
    def birth_date(self) -> datetime | None:
        """When the worker started (None before ``work()``)."""
        rec = self._live()
        return to_datetime(rec.birth) if rec else None

    @property
    def last_heartbeat(self) -> datetime | None:
        rec = self._live()
        return to_datetime(rec.last_heartbeat) if rec else None

    @property
    def state(self) -> str:
        """``busy`` or ``idle`` (rq's ``WorkerStatus``)."""
        rec = self._live()
        return rec.state if rec else WorkerStatus.IDLE

    def get_state(self) -> str:
        return self.state

    def get_current_job_id(self) -> str | None:
        rec = self._live()
        return rec.current_job_id if rec else None

    @property
    def current_job_id(self) -> str | None:
        return self.get_current_job_id()

    def get_current_job(self) -> Any:
        """The job this worker is running, or None."""
        from .job import Job

        job_id = self.get_current_job_id()
        if job_id is None:
            return None
        rec = self.backend.fetch_job(job_id)
        return None if rec is None else Job(self.backend, rec)

    @property
    def successful_job_count(self) -> int:
        """Jobs this worker finished."""
        if self._record is not None and self._spec.stats.successful == 0:
            return self._record.successful_jobs
        return self._spec.stats.successful

    @property
    def failed_job_count(self) -> int:
        """Failed attempts this worker ran."""
        if self._record is not None and self._spec.stats.failed == 0:
            return self._record.failed_jobs
        return self._spec.stats.failed

    @property
    def total_working_time(self) -> float:
        """Seconds this worker spent running jobs."""
        return self._spec.stats.working_time

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, queues={self.queue_names()!r})"

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def work(
        self,
        burst: bool = False,
        max_jobs: int | None = None,
        with_scheduler: bool = True,
        logging_level: str | int | None = None,
        **kwargs: Any,
    ) -> bool:
        """Process jobs until stopped; with ``burst``, until the queues are empty.

        Returns:
            True if at least one job was processed.

        Raises:
            ValueError: another live worker already uses this name.
            ConfigurationError: ``PLUGQ_SECRET_KEY`` is set but empty, or the
                settings (``[tool.plugq]``, ``PLUGQ_*``) are not valid.
        """
        if logging_level is not None:
            logging.getLogger("plugq").setLevel(logging_level)
        # The key and the settings read once for the run (and before any job
        # is taken: an empty key would otherwise show up only as every signed
        # job failing, or worse, as verification quietly off).
        with pinned_secret_key(), pinned_settings():
            self._spec.stop.clear()
            return self.backend.run_worker(
                self._spec, burst=burst, max_jobs=max_jobs, with_scheduler=with_scheduler
            )

    def request_stop(self) -> None:
        """Warm shutdown: finish the current job, then return from ``work()``."""
        self._spec.stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called (until the next ``work()``)."""
        return self._spec.stop.is_set()

    @classmethod
    def all(cls, connection: Any = None, queue: Queue | None = None) -> list[Worker]:
        """The registered workers, as ``Worker`` objects (name, queues, pid, state, counts…)."""
        from .connection import resolve_connection

        backend = queue.backend if queue is not None else resolve_connection(connection)
        found = backend.workers()
        if queue is not None:
            found = [w for w in found if queue.name in w.queues]
        return [cls._from_record(backend, rec) for rec in found]

    @classmethod
    def count(cls, connection: Any = None, queue: Queue | None = None) -> int:
        return len(cls.all(connection=connection, queue=queue))


class SimpleWorker(Worker):
    """rq's ``SimpleWorker``: jobs run in the worker's own process (``worker_class='simple'``)."""

    _worker_class = "simple"


class SpawnWorker(Worker):
    """rq's ``SpawnWorker`` (``worker_class='spawn'``); memory and SQLite run jobs in-process."""

    _worker_class = "spawn"
