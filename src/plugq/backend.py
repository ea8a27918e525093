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
from .exceptions import NotSupportedError
from .storage import Clock, JobRecord, JobStatus, ResultRecord, UniqueKey, WorkerRecord

#: What each of :attr:`Backend.features` means (plugq's features beyond RQ).
FEATURES: dict[str, str] = {
    "priority": "enqueue(priority=N): higher first within a queue",
    "unique_keys": "enqueue(unique=Unique(key, …)): dedupe by a key for a period and states",
    "progress": "job.set_progress(…) / job.progress",
    "values": "named values with compare-and-set: cron schedulers, rate limits",
    "rate_limit": "enqueue(rate_limit=RateLimit(key, concurrency=N | limit=N, period=S))",
    "workflows": "workflow.chain / workflow.group (results passed to the next step)",
}


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


class Pipeline:
    """``with q.connection.pipeline() as pipe: q.enqueue_many(…, pipeline=pipe); pipe.execute()``.

    Jobs given to a pipeline are stored together, all or none, by
    :meth:`execute` (one :meth:`Backend.enqueue_jobs` batch), as rq's Redis
    pipeline does; leaving the ``with`` block without ``execute`` stores nothing.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._records: list[JobRecord] = []
        self._after: list[Any] = []

    def add(self, records: Sequence[JobRecord], after: Any = None) -> None:
        """Queue ``records`` for :meth:`execute`; ``after(stored)`` runs once they are stored."""
        self._records.extend(records)
        if after is not None:
            self._after.append((len(records), after))

    def execute(self) -> list[JobRecord]:
        """Store every job added so far in one batch; returns the stored records."""
        records, self._records = self._records, []
        after, self._after = self._after, []
        stored = self.backend.enqueue_jobs(records) if records else []
        start = 0
        for count, fn in after:
            fn(stored[start:start + count])
            start += count
        return stored

    def reset(self) -> None:
        """Forget what was added (as redis-py's ``Pipeline.reset``)."""
        self._records, self._after = [], []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()


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
    #: The features this backend runs: rq 2.x's (``repeat``, ``group``, ``commands``,
    #: ``results``, ``callback_timeout``, ``on_stopped``, ``webhooks``,
    #: ``retry_result``) and plugq's beyond RQ (keys of :data:`FEATURES`); the
    #: public API refuses the others with NotSupportedError.
    features: frozenset[str] = frozenset()

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

    def pipeline(self) -> Pipeline:
        """A batch of enqueues stored together by ``execute()`` (rq's ``connection.pipeline()``)."""
        return Pipeline(self)

    #: ``Worker(**options)`` this backend honours (anything else of rq's raises NotSupportedError).
    worker_options: ClassVar[frozenset[str]] = frozenset()

    def require(self, feature: str, what: str = "") -> None:
        """Raise NotSupportedError unless this backend declares ``feature``.

        For rq's features ``what`` names the call refused; for plugq's
        features beyond RQ (:data:`FEATURES`) it is a detail appended to the
        feature's description.
        """
        if feature in self.features:
            return
        if feature in FEATURES:
            raise NotSupportedError(
                f"{type(self).__name__} ({self.safe_url()}) does not support "
                f"{FEATURES[feature]}{what}; it is available on memory://, sqlite:// and "
                "postgresql:// (plugq's engine)"
            )
        raise NotSupportedError(
            f"{what} is not supported by {type(self).__name__} ({self.safe_url()})"
        )

    def job_results(self, job_id: str) -> list[ResultRecord]:
        """The job's earlier outcomes, newest first (the latest is the job record itself).

        Raises:
            NotSupportedError: the backend keeps no results history.
        """
        self.require("results", "job.results()")
        return []

    def enqueue_dependents(self, job_id: str) -> None:
        """Enqueue the deferred jobs whose dependencies have now all ended as they require.

        Raises:
            NotSupportedError: the backend cannot.
        """
        raise NotSupportedError(
            f"cancel(enqueue_dependents=True) is not supported by {type(self).__name__}"
        )

    def send_command(self, worker_name: str, command: dict[str, str]) -> None:
        """Deliver ``command`` (``{'command': 'shutdown' | 'kill-horse' | 'stop-job', …}``) to a worker.

        Raises:
            NotSupportedError: the backend's workers take no commands.
        """
        self.require("commands", "worker commands (plugq.command)")

    def add_to_group(self, group: str, job_ids: Sequence[str]) -> None:
        """Record ``job_ids`` as members of ``group``."""
        self.require("group", "Group")

    def group_members(self, group: str) -> list[str]:
        """Ids of ``group``'s members, in the order added."""
        self.require("group", "Group")
        return []

    def remove_from_group(self, group: str, job_ids: Sequence[str]) -> None:
        """Forget members of ``group``."""
        self.require("group", "Group")

    def groups(self) -> list[str]:
        """Names of every group."""
        self.require("group", "Group")
        return []

    def maintenance(self) -> None:  # noqa: B027 - optional hook
        """Promote due scheduled jobs, expire TTLs, recover abandoned jobs.

        Workers call this on their own; tests and monitors may call it to see
        the store as a worker would. The default does nothing.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. The default does nothing."""

    # -- beyond RQ (optional; see :attr:`features`) --------------------------

    def enqueue_unique(self, records: Sequence[JobRecord], key: UniqueKey) -> list[JobRecord]:
        """Store ``records`` unless a stored job holds ``key`` (see :class:`~plugq.storage.UniqueKey`).

        Raises:
            DuplicateJobError: with ``job_id``, the job that holds the key.
        """
        self.require("unique_keys")
        raise AssertionError  # pragma: no cover - require() raised

    def set_progress(self, job_id: str, progress: str) -> None:
        """Store a running job's progress (opaque text) without touching its record.

        Raises:
            NoSuchJobError: the job does not exist.
        """
        self.require("progress")

    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        """The progress last stored for each id, in order (None: none)."""
        self.require("progress")
        return []

    def get_value(self, key: str) -> str | None:
        """A named value (cron state, rate-limit windows), or None."""
        self.require("values")
        return None

    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set a named value; True if it was ``expected`` and is now ``new``."""
        self.require("values")
        return False

    def values(self, prefix: str) -> dict[str, str]:
        """Every named value whose key starts with ``prefix``."""
        self.require("values")
        return {}


__all__ = ["FEATURES", "Backend", "Pipeline", "WorkerSpec", "WorkerStats"]
