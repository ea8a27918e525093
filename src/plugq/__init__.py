"""plugq: RQ's Queue / Job / Worker over swappable backends (memory, SQLite, RQ on Redis).

Every public name is importable from here (``from plugq import Queue, Worker``).
``import plugq`` loads the exceptions, :class:`Queue` and :class:`Job`; the
submodule defining any other name is imported the first time the name is
asked for (PEP 562). A worker then carries the modules it runs, not cron,
workflows, groups or the decorator, and a CLI command or a spawned work horse
starts without paying for the whole API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# Imported with the package, not on first use: importing them registers the
# public Job and Queue classes with the layers below (plugq.job registers Job
# with plugq._events, plugq.queue registers Queue with plugq.job), which build
# the handles hooks, callbacks and dependents receive. Every process that runs
# or fails a job needs them, whichever plugq module it imports first (the CLI's
# supervisor imports only the engine), and every submodule import runs this
# package first.
from .job import Job, cancel_job, requeue_job
from .queue import Queue

if TYPE_CHECKING:
    # What type checkers and IDEs see; at run time __getattr__ imports these on first use.
    from . import cron, workflow
    from ._context import get_current_job
    from .backend import Backend
    from .callbacks import Callback, Webhook
    from .connection import connect
    from .decorators import job
    from .group import Group
    from .hookspecs import hookimpl
    from .progress import Progress
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

#: Public name -> the submodule defining it ("" for a name that is a submodule itself).
_LAZY: dict[str, str] = {
    "cron": "",
    "workflow": "",
    "get_current_job": "_context",
    "Backend": "backend",
    "Callback": "callbacks",
    "Webhook": "callbacks",
    "connect": "connection",
    "job": "decorators",
    "Group": "group",
    "hookimpl": "hookspecs",
    "Progress": "progress",
    "RateLimit": "ratelimit",
    "CanceledJobRegistry": "registry",
    "DeferredJobRegistry": "registry",
    "FailedJobRegistry": "registry",
    "FinishedJobRegistry": "registry",
    "ScheduledJobRegistry": "registry",
    "StartedJobRegistry": "registry",
    "Result": "results",
    "Dependency": "retry",
    "Repeat": "retry",
    "Retry": "retry",
    "Clock": "storage",
    "JobStatus": "storage",
    "ManualClock": "storage",
    "Storage": "storage",
    "Unique": "unique",
    "SimpleWorker": "worker",
    "SpawnWorker": "worker",
    "Worker": "worker",
    "WorkerStatus": "worker",
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the imports above: to them a
    # misspelled ``plugq.Qeue`` stays an error rather than becoming ``Any``.

    def __getattr__(name: str) -> Any:
        """Import the submodule defining ``name`` and cache the name here (PEP 562)."""
        where = _LAZY.get(name)
        if where is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module = importlib.import_module(f".{where or name}", __name__)
        value = module if not where else getattr(module, name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# Importing plugq.job (at the top) bound the submodule here as ``job``; the
# public ``plugq.job`` is the decorator, which __getattr__ provides. A
# submodule is bound to its package only when it is first loaded, so nothing
# binds it again; it stays reachable by ``from plugq.job import …``.
del globals()["job"]


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
