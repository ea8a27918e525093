"""Job registries: one per status (started, finished, failed, …), per queue, as RQ's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .job import Job
from .storage import JobStatus

if TYPE_CHECKING:
    from .backend import Backend
    from .queue import Queue


class BaseRegistry:
    """The jobs of one queue that are in one status."""

    status: JobStatus = JobStatus.STARTED

    def __init__(
        self, name: str = "default", connection: Any = None, queue: Queue | None = None
    ) -> None:
        if queue is not None:
            self.name = queue.name
            self.backend: Backend = queue.backend
        else:
            from .connection import resolve_connection

            self.name = name
            self.backend = resolve_connection(connection)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def count(self) -> int:
        return self.backend.count(self.name, self.status)

    def __len__(self) -> int:
        return self.count

    def get_job_ids(self, start: int = 0, end: int = -1) -> list[str]:
        """Ids in the registry, oldest first; ``end`` is inclusive as in RQ (-1: all)."""
        length = -1 if end < 0 else end - start + 1
        return self.backend.job_ids(self.name, self.status, start, length)

    def get_jobs(self, start: int = 0, end: int = -1) -> list[Job]:
        ids = self.get_job_ids(start, end)
        return [Job(self.backend, r) for r in self.backend.fetch_jobs(ids) if r is not None]

    def __contains__(self, item: Job | str) -> bool:
        job_id = item.id if isinstance(item, Job) else item
        record = self.backend.fetch_job(job_id)
        return record is not None and record.origin == self.name and record.status is self.status

    def remove(self, job: Job | str, delete_job: bool = False) -> None:
        """Take the job out of this registry; with ``delete_job`` delete it too.

        Raises:
            InvalidJobOperation: the job is not in this registry.
        """
        job_id = job.id if isinstance(job, Job) else job
        self.backend.remove_from_registry(self.name, self.status, job_id, delete_job=delete_job)


class _RequeueMixin(BaseRegistry):
    def requeue(self, job_or_id: Job | str, at_front: bool = False) -> Job:
        """Put a job of this registry back on its queue.

        Raises:
            InvalidJobOperation: the job is not in this registry.
        """
        job_id = job_or_id.id if isinstance(job_or_id, Job) else job_or_id
        if job_id not in self:
            from .exceptions import InvalidJobOperation

            raise InvalidJobOperation(
                f"Job {job_id} is not in the {self.status.value} registry of {self.name!r}"
            )
        return Job(self.backend, self.backend.requeue_job(job_id, at_front=at_front))


class StartedJobRegistry(BaseRegistry):
    """Jobs a worker is running now."""

    status = JobStatus.STARTED


class FinishedJobRegistry(BaseRegistry):
    """Jobs that finished, kept for their ``result_ttl``."""

    status = JobStatus.FINISHED


class FailedJobRegistry(_RequeueMixin):
    """Jobs that failed for good, kept for their ``failure_ttl``; they can be requeued."""

    status = JobStatus.FAILED


class DeferredJobRegistry(BaseRegistry):
    """Jobs waiting for their dependencies."""

    status = JobStatus.DEFERRED


class ScheduledJobRegistry(BaseRegistry):
    """Jobs waiting for their time (``enqueue_at``, ``enqueue_in``, retry intervals)."""

    status = JobStatus.SCHEDULED


class CanceledJobRegistry(_RequeueMixin):
    """Canceled jobs; they can be requeued."""

    status = JobStatus.CANCELED
