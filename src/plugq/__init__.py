"""plugq: RQ's Queue / Job / Worker over swappable backends (memory, SQLite, RQ on Redis)."""

from __future__ import annotations

from . import cron, workflow
from ._context import get_current_job
from .backend import Backend
from .callbacks import Callback, Webhook
from .connection import connect
from .decorators import job
from .exceptions import (
    AbandonedJobError,
    BackendUnavailableError,
    ConfigurationError,
    DuplicateJobError,
    InvalidJobOperation,
    InvalidTaskError,
    JobStoppedException,
    JobTimeoutException,
    NoSuchJobError,
    NotSupportedError,
    PlugqError,
    SerializationError,
    UnknownBackendError,
    WorkHorseKilledException,
)
from .group import Group
from .hookspecs import hookimpl
from .job import Job, cancel_job, requeue_job
from .progress import Progress
from .queue import Queue
from .ratelimit import RateLimit
from .registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from .results import Result
from .retry import Dependency, Repeat, Retry
from .storage import Clock, JobStatus, ManualClock, Storage
from .unique import Unique
from .worker import SimpleWorker, SpawnWorker, Worker, WorkerStatus

__version__ = "0.1.0"

__all__ = [
    "AbandonedJobError",
    "Backend",
    "BackendUnavailableError",
    "Callback",
    "CanceledJobRegistry",
    "Clock",
    "ConfigurationError",
    "DeferredJobRegistry",
    "Dependency",
    "DuplicateJobError",
    "FailedJobRegistry",
    "FinishedJobRegistry",
    "Group",
    "InvalidJobOperation",
    "InvalidTaskError",
    "Job",
    "JobStatus",
    "JobStoppedException",
    "JobTimeoutException",
    "ManualClock",
    "NoSuchJobError",
    "NotSupportedError",
    "PlugqError",
    "Progress",
    "Queue",
    "RateLimit",
    "Repeat",
    "Result",
    "Retry",
    "ScheduledJobRegistry",
    "SerializationError",
    "SimpleWorker",
    "SpawnWorker",
    "StartedJobRegistry",
    "Storage",
    "Unique",
    "UnknownBackendError",
    "Webhook",
    "WorkHorseKilledException",
    "Worker",
    "WorkerStatus",
    "__version__",
    "cancel_job",
    "connect",
    "cron",
    "get_current_job",
    "hookimpl",
    "job",
    "requeue_job",
    "workflow",
]
