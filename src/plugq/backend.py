"""What the public API talks to: :class:`Backend`, whole operations on jobs.

:class:`~plugq.Queue`, :class:`~plugq.Job` and :class:`~plugq.Worker` call a
``Backend``: enqueue these jobs, cancel that one, run a worker. plugq's engine
is the ``Backend`` of every :class:`~plugq.storage.Storage` (memory, SQLite,
PostgreSQL, third-party storages), so a storage author never subclasses this
class. A backend that brings its own engine (the RQ backend runs rq itself)
subclasses it directly and implements every abstract method.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .config import mask_url
from .storage import Clock, JobRecord, JobStatus, WorkerRecord


@dataclass
class WorkerStats:
    """What one worker has done so far (read by ``Worker.successful_job_count`` …)."""

    successful: int = 0
    failed: int = 0
    #: seconds spent running jobs.
    working_time: float = 0.0


@dataclass
class WorkerSpec:
    """A worker as a backend runs it: plain data, not the public ``Worker``.

    ``stop`` is set to ask for a warm shutdown; the backend adds to ``stats``
    as jobs end. ``hook_worker`` is what the ``plugq_job_started`` hook
    receives as ``worker`` (the public ``Worker``).
    """

    name: str
    queues: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    #: rq worker class for the RQ backend: 'fork', 'simple' or 'spawn' (None: its default).
    worker_class: str | None = None
    #: backend-specific options given to ``Worker(**options)``.
    options: dict[str, Any] = field(default_factory=dict)
    stats: WorkerStats = field(default_factory=WorkerStats)
    hook_worker: Any = None


class Backend(ABC):
    """A place jobs live, and the operations on them.

    Subclasses set :attr:`scheme` and :attr:`clock` and implement every
    abstract method. Methods take and return :class:`~plugq.storage.JobRecord`
    values (plain data); the public ``Job`` wraps them. Reads never change
    what is stored; a job whose TTL ran out is not returned.
    """

    #: The URL scheme the backend is registered under (``memory``, ``sqlite``…).
    scheme: ClassVar[str] = ""
    #: Where every time-dependent decision reads the time.
    clock: Clock

    def __init__(self, url: str) -> None:
        #: The URL this backend was made from (passwords included; see :meth:`safe_url`).
        self.url = url

    # -- identity ---------------------------------------------------------

    def safe_url(self) -> str:
        """The URL with any password replaced by ``***``, for logs and errors."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.safe_url()}>"

    # -- jobs -------------------------------------------------------------

    @abstractmethod
    def enqueue_jobs(self, records: Sequence[JobRecord], *, unique: bool = False) -> list[JobRecord]:
        """Store new jobs, all or none, and place each one.

        Parameters:
            records: jobs prepared by the core. ``status`` is ``QUEUED`` or
                ``SCHEDULED`` (with ``scheduled_for``); a record with
                ``depends_on`` is made ``DEFERRED`` by the backend unless every
                dependency has already ended as required.
            unique: refuse the batch if any of its ids is queued or started.

        Returns:
            The records as stored (status, ``enqueued_at`` filled in).

        Raises:
            DuplicateJobError: ``unique`` and an id is queued or started.
            NoSuchJobError: a dependency id does not exist.
        """

    @abstractmethod
    def fetch_job(self, job_id: str) -> JobRecord | None:
        """Return the stored job, or None when it does not exist or has expired."""

    def fetch_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Return one record (or None) per id, in order. Override to batch."""
        return [self.fetch_job(job_id) for job_id in job_ids]

    @abstractmethod
    def delete_job(self, job_id: str) -> None:
        """Remove the job from the store, its queue and every registry. No error if absent."""

    @abstractmethod
    def save_meta(self, job_id: str, meta: bytes) -> None:
        """Replace the job's serialized ``meta`` and nothing else.

        Raises:
            NoSuchJobError: the job does not exist.
        """

    @abstractmethod
    def cancel_job(self, job_id: str) -> JobRecord:
        """Move a job to the canceled registry; a queued job is then never started.

        Returns:
            The canceled record.

        Raises:
            NoSuchJobError: the job does not exist.
            InvalidJobOperation: the job is already canceled, finished or failed.
        """

    @abstractmethod
    def requeue_job(self, job_id: str, *, at_front: bool = False) -> JobRecord:
        """Put a failed, canceled or stopped job back on its queue.

        Returns:
            The requeued record (status ``QUEUED``).

        Raises:
            NoSuchJobError: the job does not exist.
            InvalidJobOperation: the job is not failed, canceled or stopped.
        """

    # -- queues and registries -------------------------------------------

    @abstractmethod
    def queue_names(self) -> list[str]:
        """Names of every queue that has held a job, sorted."""

    @abstractmethod
    def job_ids(
        self, queue: str, status: JobStatus, offset: int = 0, length: int = -1
    ) -> list[str]:
        """Ids of the queue's jobs in ``status``.

        ``QUEUED`` lists the queue itself in the order jobs will be taken;
        other statuses list that registry, oldest first. ``length=-1`` means all.
        """

    @abstractmethod
    def count(self, queue: str, status: JobStatus) -> int:
        """How many of the queue's jobs are in ``status`` (``QUEUED``: the queue's length)."""

    @abstractmethod
    def empty_queue(self, queue: str) -> int:
        """Delete every queued job of ``queue``; returns how many were removed."""

    @abstractmethod
    def delete_queue(self, queue: str, *, delete_jobs: bool = True) -> None:
        """Forget the queue; with ``delete_jobs`` its queued jobs are deleted too."""

    @abstractmethod
    def remove_from_registry(
        self, queue: str, status: JobStatus, job_id: str, *, delete_job: bool = False
    ) -> None:
        """Take a job out of a registry (and delete it when asked).

        Raises:
            InvalidJobOperation: the job is not in that registry.
        """

    # -- workers ----------------------------------------------------------

    @abstractmethod
    def run_worker(
        self, worker: WorkerSpec, *, burst: bool, max_jobs: int | None, with_scheduler: bool
    ) -> bool:
        """Run ``worker`` until ``worker.stop`` is set (or, with ``burst``, until its queues are empty).

        Returns:
            True when at least one job was processed, as RQ's ``Worker.work``.
        """

    @abstractmethod
    def run_sync(self, record: JobRecord) -> JobRecord:
        """Store ``record`` and run it now, in this thread, through the worker's path.

        Used by ``Queue(is_async=False)``: retries (intervals are waited on the
        backend's clock), timeouts, callbacks, stored status, result and
        exc_info all behave as with a worker.

        Returns:
            The record after it ended.
        """

    @abstractmethod
    def workers(self) -> list[WorkerRecord]:
        """The workers currently registered, live or not yet reaped."""

    def maintenance(self) -> None:  # noqa: B027 - optional hook
        """Promote due scheduled jobs, expire TTLs, recover abandoned jobs.

        Workers call this on their own; tests and monitors may call it to see
        the store as a worker would. The default does nothing.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. The default does nothing."""


__all__ = ["Backend", "WorkerSpec", "WorkerStats"]
