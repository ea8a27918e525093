"""The backend contract.

Two classes, read top to bottom:

* :class:`Backend` is what :class:`~plugq.Queue`, :class:`~plugq.Job` and
  :class:`~plugq.Worker` talk to: whole operations (enqueue these jobs, cancel
  that one, run a worker). A backend that brings its own engine (the RQ
  backend runs RQ itself) subclasses this directly.
* :class:`StorageBackend` implements every operation once, with plugq's own
  lifecycle (retries, timeouts, schedules, dependencies, TTLs, abandoned
  jobs), on top of a small set of storage primitives. The memory and SQLite
  backends subclass it and implement only the primitives, so the job
  lifecycle is defined in one place and behaves the same on both.

Feature flags (:attr:`Backend.features`) say what a backend honours; a call a
backend cannot honour raises :class:`~plugq.exceptions.NotSupportedError`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ._clock import Clock
from ._record import JobRecord, WorkerRecord
from ._status import JobStatus
from .exceptions import NotSupportedError

if TYPE_CHECKING:
    from .worker import Worker

#: Every feature name a backend may declare.
ALL_FEATURES = frozenset(
    {
        "retry",
        "timeout",
        "schedule",
        "dependencies",
        "callbacks",
        "cancel",
        "ttl",
        "unique",
        "sync",
        "meta",
        "manual_clock",
        "abandoned_jobs",
        "async_tasks",
        "enqueue_many",
    }
)


class Backend(ABC):
    """A place jobs live, and the operations on them.

    Subclasses set :attr:`scheme` and :attr:`features` and implement every
    abstract method. Methods take and return :class:`~plugq._record.JobRecord`
    values (plain data); the public ``Job`` wraps them.
    """

    #: The URL scheme the backend is registered under (``memory``, ``sqlite``…).
    scheme: ClassVar[str] = ""
    #: The features this backend honours (subset of :data:`ALL_FEATURES`).
    features: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        #: The URL this backend was made from (passwords included; see :meth:`safe_url`).
        self.url = url
        #: Where every time-dependent decision reads the time.
        self.clock: Clock = clock or Clock()

    # -- identity ---------------------------------------------------------

    def safe_url(self) -> str:
        """The URL with any password replaced by ``***``, for logs and errors."""
        from .config import mask_url

        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.safe_url()}>"

    def require(self, feature: str) -> None:
        """Raise :class:`NotSupportedError` unless this backend declares ``feature``.

        Raises:
            NotSupportedError: naming the feature and the backend.
        """
        if feature not in self.features:
            raise NotSupportedError(
                f"{feature!r} is not supported by the {self.scheme or type(self).__name__} "
                f"backend ({self.safe_url()}); see the backend table in the README"
            )

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
        self, worker: Worker, *, burst: bool, max_jobs: int | None, with_scheduler: bool
    ) -> bool:
        """Run ``worker`` until stopped (or, with ``burst``, until its queues are empty).

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


class StorageBackend(Backend):
    """A backend made of storage primitives; plugq supplies the lifecycle.

    Subclasses implement the methods in the *primitives* section. Each primitive
    is atomic on its own (a transaction, a lock); the core never needs two of
    them to be atomic together, because every transition it makes with
    :meth:`put` is a compare-and-set on the stored status.
    """

    features: ClassVar[frozenset[str]] = ALL_FEATURES - {"manual_clock"}

    #: Seconds without a heartbeat after which a worker's started jobs are abandoned.
    lease: float = 60.0

    # -- primitives (abstract) -------------------------------------------

    @abstractmethod
    def insert(self, records: Sequence[JobRecord], *, unique_ids: Collection[str] = ()) -> None:
        """Store new records, all or none; replaces records with the same id.

        A record with status ``QUEUED`` is placed at the back of its queue
        (front when ``record.at_front``); other statuses are only indexed.

        Raises:
            DuplicateJobError: an id in ``unique_ids`` is stored as queued or started.
        """

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """The stored record, expired or not; None if absent."""

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """One record or None per id, in order. Override to batch."""
        return [self.get(job_id) for job_id in job_ids]

    @abstractmethod
    def put(
        self, record: JobRecord, *, expected: Collection[JobStatus] | None = None,
        expected_attempts: int | None = None,
    ) -> bool:
        """Overwrite a stored record (every field but ``meta``).

        Parameters:
            record: the new state.
            expected: when given, write only if the stored status is one of
                these (compare-and-set); this is how two workers or two
                schedulers never make the same transition twice.
            expected_attempts: when given, write only if the stored
                ``attempts`` equals it. A worker storing an outcome passes the
                attempt it ran, so a worker that stalled past its lease cannot
                overwrite the attempt that replaced it.

        A record that becomes ``QUEUED`` from any other status (or moves to
        another queue) enters the back of its queue (front when
        ``record.at_front``); one that stays where it is keeps its place; one
        that leaves ``QUEUED`` leaves the queue.

        Returns:
            True if written; False if the record is absent or the status did not match.
        """

    @abstractmethod
    def remove(self, job_id: str) -> bool:
        """Delete the record wherever it is; True if it existed."""

    @abstractmethod
    def set_meta(self, job_id: str, meta: bytes) -> bool:
        """Replace only ``meta``; True if the record exists."""

    @abstractmethod
    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        """Take the next runnable job for ``worker_name``, atomically.

        Looks at ``queues`` in the order given and takes the first queued job
        whose ``expires_at`` is unset or later than ``now``. The taken job is
        stored with status ``STARTED``, ``started_at=now``, ``worker_name``,
        ``expires_at=None`` and ``attempts + 1``. Exactly one caller gets a job.

        Returns:
            The claimed record, or None when no queue has a runnable job.
        """

    @abstractmethod
    def ids(self, queue: str, status: JobStatus, offset: int = 0, length: int = -1) -> list[str]:
        """Ids in ``status`` for ``queue`` (queue order for ``QUEUED``, else oldest first)."""

    @abstractmethod
    def count_status(self, queue: str, status: JobStatus) -> int:
        """Number of the queue's records in ``status``."""

    @abstractmethod
    def queues(self) -> list[str]:
        """Every queue name that has records, sorted."""

    @abstractmethod
    def remove_queued(self, queue: str) -> int:
        """Delete every ``QUEUED`` record of ``queue``; returns how many."""

    @abstractmethod
    def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids of ``SCHEDULED`` records with ``scheduled_for <= now``, earliest first."""

    @abstractmethod
    def expired(self, now: float, limit: int = 100) -> list[str]:
        """Ids of records with ``expires_at <= now``."""

    @abstractmethod
    def dependents(self, job_id: str) -> list[str]:
        """Ids of ``DEFERRED`` records whose ``depends_on`` contains ``job_id``."""

    @abstractmethod
    def started_by_dead_workers(self, now: float, exclude: str | None = None) -> list[JobRecord]:
        """``STARTED`` records whose worker has not heartbeated within :attr:`lease`.

        A started job whose worker is not registered at all counts as abandoned.
        ``exclude`` names a worker to leave out (the caller itself).
        """

    @abstractmethod
    def register_worker(self, worker: WorkerRecord) -> None:
        """Add or replace a worker's record."""

    @abstractmethod
    def heartbeat(
        self, name: str, now: float, *, state: str, current_job_id: str | None,
        successful: int = 0, failed: int = 0,
    ) -> None:
        """Record that worker ``name`` is alive at ``now``, with its state and counters."""

    @abstractmethod
    def unregister_worker(self, name: str) -> None:
        """Forget a worker (it stopped or was found dead)."""

    @abstractmethod
    def list_workers(self) -> list[WorkerRecord]:
        """Every registered worker."""

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a job may be runnable on ``queues`` or ``timeout`` passes.

        Backends override this to wake up early (a condition variable, a
        change counter); the default waits out the timeout, so it is correct
        but slow to notice new work.
        """
        time.sleep(timeout)

    # -- operations (implemented once, here) ------------------------------

    def enqueue_jobs(self, records: Sequence[JobRecord], *, unique: bool = False) -> list[JobRecord]:
        from . import _lifecycle

        return _lifecycle.enqueue(self, records, unique=unique)

    def fetch_job(self, job_id: str) -> JobRecord | None:
        from . import _lifecycle

        return _lifecycle.live(self, self.get(job_id))

    def fetch_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        from . import _lifecycle

        return [_lifecycle.live(self, rec) for rec in self.get_many(job_ids)]

    def delete_job(self, job_id: str) -> None:
        self.remove(job_id)

    def save_meta(self, job_id: str, meta: bytes) -> None:
        from .exceptions import NoSuchJobError

        if not self.set_meta(job_id, meta):
            raise NoSuchJobError(f"No such job: {job_id}")

    def cancel_job(self, job_id: str) -> JobRecord:
        from . import _lifecycle

        return _lifecycle.cancel(self, job_id)

    def requeue_job(self, job_id: str, *, at_front: bool = False) -> JobRecord:
        from . import _lifecycle

        return _lifecycle.requeue(self, job_id, at_front=at_front)

    def queue_names(self) -> list[str]:
        return self.queues()

    def job_ids(self, queue: str, status: JobStatus, offset: int = 0, length: int = -1) -> list[str]:
        from . import _lifecycle

        _lifecycle.expire(self)
        return self.ids(queue, status, offset, length)

    def count(self, queue: str, status: JobStatus) -> int:
        from . import _lifecycle

        _lifecycle.expire(self)
        return self.count_status(queue, status)

    def empty_queue(self, queue: str) -> int:
        return self.remove_queued(queue)

    def delete_queue(self, queue: str, *, delete_jobs: bool = True) -> None:
        if delete_jobs:
            self.remove_queued(queue)
            return
        # Without delete_jobs the jobs survive as records but leave the queue,
        # as RQ's Queue.delete(delete_jobs=False) drops only the list key.
        for job_id in self.ids(queue, JobStatus.QUEUED):
            rec = self.get(job_id)
            if rec is not None:
                rec.status = JobStatus.CANCELED
                self.put(rec, expected={JobStatus.QUEUED})

    def remove_from_registry(
        self, queue: str, status: JobStatus, job_id: str, *, delete_job: bool = False
    ) -> None:
        from . import _lifecycle

        _lifecycle.remove_from_registry(self, queue, status, job_id, delete_job=delete_job)

    def run_worker(
        self, worker: Worker, *, burst: bool, max_jobs: int | None, with_scheduler: bool
    ) -> bool:
        from ._worker_loop import WorkerLoop

        if worker.worker_class not in (None, "simple"):
            # Jobs run in the worker's process here; a fork or spawn worker
            # asked for must not silently become a simple one.
            raise NotSupportedError(
                f"worker_class={worker.worker_class!r} is not supported by the {self.scheme} "
                f"backend ({self.safe_url()}): it runs jobs in the worker's process "
                "(worker_class='simple'); fork and spawn workers need redis://"
            )
        return WorkerLoop(self, worker).run(
            burst=burst, max_jobs=max_jobs, with_scheduler=with_scheduler
        )

    def run_sync(self, record: JobRecord) -> JobRecord:
        from ._worker_loop import run_sync

        return run_sync(self, record)

    def workers(self) -> list[WorkerRecord]:
        return self.list_workers()

    def maintenance(self) -> None:
        from . import _lifecycle

        _lifecycle.maintenance(self)


def unsupported(backend: Backend, feature: str) -> Any:
    """Raise the standard 'not supported' error for ``feature`` on ``backend``."""
    raise NotSupportedError(
        f"{feature!r} is not supported by the {backend.scheme} backend ({backend.safe_url()})"
    )
