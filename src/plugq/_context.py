"""The job running in this thread or task, for ``get_current_job()``."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .job import Job

_current: ContextVar[Job | None] = ContextVar("plugq_current_job", default=None)


def get_current_job() -> Job | None:
    """The :class:`~plugq.Job` being executed, or None outside a job (as RQ's)."""
    return _current.get()
