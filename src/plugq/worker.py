"""``Worker``: takes jobs from its queues, in the order given, and runs them."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from .backend import Backend, WorkerSpec
from .queue import Queue
from .security import secret_key
from .storage import WorkerRecord


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
        self.options = kwargs
        self.log = logging.getLogger("plugq.worker")
        # What the backend runs: plain data; the counters live in its stats.
        self._spec = WorkerSpec(
            name=self.name, queues=self.queue_names(), worker_class=worker_class,
            options=kwargs, hook_worker=self,
        )

    @property
    def successful_job_count(self) -> int:
        """Jobs this worker finished."""
        return self._spec.stats.successful

    @property
    def failed_job_count(self) -> int:
        """Failed attempts this worker ran."""
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
            ConfigurationError: ``PLUGQ_SECRET_KEY`` is set but empty.
        """
        # Before any job is taken: an empty key would otherwise show up only as
        # every signed job failing (or, worse, as verification quietly off).
        secret_key()
        if logging_level is not None:
            logging.getLogger("plugq").setLevel(logging_level)
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
    def all(cls, connection: Any = None, queue: Queue | None = None) -> list[WorkerRecord]:
        """The registered workers (name, queues, pid, state, current_job_id, heartbeat…)."""
        from .connection import resolve_connection

        backend = queue.backend if queue is not None else resolve_connection(connection)
        found = backend.workers()
        if queue is not None:
            found = [w for w in found if queue.name in w.queues]
        return found

    @classmethod
    def count(cls, connection: Any = None, queue: Queue | None = None) -> int:
        return len(cls.all(connection=connection, queue=queue))
