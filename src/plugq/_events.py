"""The one place plugq's lifecycle hooks are fired from, on every backend.

The engine works on records; hooks and callbacks receive the public
:class:`~plugq.Job`. The engine sits below the public API and must not import
it, so :mod:`plugq.job` registers its class here when it is imported (always
before a job exists) and :func:`job_for` builds handles with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .plugins import hook
from .storage import JobRecord

if TYPE_CHECKING:
    from .backend import Backend
    from .job import Job

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_job_class: list[Callable[[Backend, JobRecord], Job]] = []


def register_job_class(cls: Callable[[Backend, JobRecord], Job]) -> None:
    """Called once by :mod:`plugq.job`: the class :func:`job_for` builds."""
    _job_class[:] = [cls]


def job_for(backend: Backend, rec: JobRecord) -> Job:
    """The public handle on ``rec`` stored in ``backend``."""
    return _job_class[0](backend, rec)


def wanted(event: str) -> bool:
    """Whether any plugin implements ``plugq_job_<event>`` (skip building its arguments if not)."""
    return bool(getattr(hook(), f"plugq_job_{event}").get_hookimpls())


def enqueued(jobs: Sequence[Job]) -> None:
    """Fire ``plugq_job_enqueued`` once per job."""
    caller = hook()
    if caller.plugq_job_enqueued.get_hookimpls():
        for job in jobs:
            caller.plugq_job_enqueued(job=job)


def started(job: Job, worker: Any) -> None:
    """Fire ``plugq_job_started`` (a worker took ``job`` and is about to run it)."""
    caller = hook()
    if caller.plugq_job_started.get_hookimpls():
        caller.plugq_job_started(job=job, worker=worker)


def finished(job: Job, result: Any) -> None:
    """Fire ``plugq_job_finished``."""
    caller = hook()
    if caller.plugq_job_finished.get_hookimpls():
        caller.plugq_job_finished(job=job, result=result)


def failed(job: Job, exc_info: ExcInfo) -> None:
    """Fire ``plugq_job_failed`` (every failed attempt, retried or not)."""
    caller = hook()
    if caller.plugq_job_failed.get_hookimpls():
        caller.plugq_job_failed(job=job, exc_info=exc_info)
