"""The plugq hook specifications (pluggy project ``plugq``).

A plugin is a module or object with functions decorated ``@plugq.hookimpl``
and named as below; it is found through the ``plugq`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .job import Job
    from .storage import Storage
    from .worker import Worker

hookspec = pluggy.HookspecMarker("plugq")
hookimpl = pluggy.HookimplMarker("plugq")

#: ``register(scheme, factory)``; ``factory(url)`` returns a :class:`~plugq.storage.Storage`
#: (plugq's engine runs over it) or a complete :class:`~plugq.backend.Backend`.
RegisterBackend = Callable[[str, Callable[[str], "Storage | Backend"]], None]


@hookspec
def plugq_register_backends(register: RegisterBackend) -> None:
    """Register URL schemes this plugin serves.

    Call ``register(scheme, factory)`` once per scheme (``"sqlite"``,
    ``"redis"``…); ``factory(url: str)`` builds a storage (or a backend with
    its own engine) for that URL. Two plugins registering one scheme is an
    error naming both.
    """


@hookspec(firstresult=True)
def plugq_adapt_connection(connection: Any) -> Storage | Backend | None:
    """Turn a foreign connection object into a storage (or a backend), or return None.

    Lets ``Queue(connection=redis.Redis(...))`` select the RQ backend, as in
    RQ's own examples. The first plugin to return a backend wins.
    """


@hookspec
def plugq_job_enqueued(job: Job) -> None:
    """A job was stored (queued, scheduled or deferred). Called on every backend."""


@hookspec
def plugq_job_started(job: Job, worker: Worker) -> None:
    """A worker took ``job`` and is about to run it."""


@hookspec
def plugq_job_finished(job: Job, result: Any) -> None:
    """``job`` returned ``result`` and its result was stored."""


@hookspec
def plugq_job_failed(
    job: Job,
    exc_info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> None:
    """An attempt of ``job`` raised; ``exc_info`` is ``sys.exc_info()``'s triple.

    Called on every failed attempt, including ones that will be retried; check
    ``job.get_status()`` to tell a final failure from a retry. A stored job
    whose fields are corrupt is failed unrun and reported here too, with a
    :class:`~plugq.exceptions.CorruptRecordError` naming the field and no
    traceback; treat such a ``job``'s arguments as untrusted.
    """
