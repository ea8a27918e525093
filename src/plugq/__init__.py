"""plugq: RQ's Queue / Job / Worker over swappable backends (memory, SQLite, RQ on Redis)."""

from __future__ import annotations

from ._context import get_current_job
from .backend import Backend
from .connection import connect
from .decorators import job
from .exceptions import (
    AbandonedJobError,
    BackendUnavailableError,
    ConfigurationError,
    DuplicateJobError,
    InvalidJobOperation,
    InvalidTaskError,
    JobTimeoutException,
    NoSuchJobError,
    NotSupportedError,
    PlugqError,
    SerializationError,
    UnknownBackendError,
)
from .hookspecs import hookimpl
from .job import Job
from .queue import Queue
from .registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from .retry import Dependency, Retry
from .storage import Clock, JobStatus, ManualClock, Storage
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AbandonedJobError",
    "Backend",
    "BackendUnavailableError",
    "CanceledJobRegistry",
    "Clock",
    "ConfigurationError",
    "DeferredJobRegistry",
    "Dependency",
    "DuplicateJobError",
    "FailedJobRegistry",
    "FinishedJobRegistry",
    "InvalidJobOperation",
    "InvalidTaskError",
    "Job",
    "JobStatus",
    "JobTimeoutException",
    "ManualClock",
    "NoSuchJobError",
    "NotSupportedError",
    "PlugqError",
    "Queue",
    "Retry",
    "ScheduledJobRegistry",
    "SerializationError",
    "StartedJobRegistry",
    "Storage",
    "UnknownBackendError",
    "Worker",
    "__version__",
    "connect",
    "get_current_job",
    "hookimpl",
    "job",
]
