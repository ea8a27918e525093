"""plugq's engine: the :class:`~plugq.backend.Backend` of every storage.

:class:`Engine` composes a :class:`~plugq.storage.Storage` (primitives) with
the lifecycle (:mod:`plugq._lifecycle`) and the worker loop
(:mod:`plugq._worker_loop`). The storage keeps its own vocabulary; the public
API only ever sees the engine's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from . import _lifecycle
from ._worker_loop import WorkerLoop, report_quarantined, run_sync
from .backend import Backend, WorkerSpec
from .exceptions import NoSuchJobError
from .storage import (
    HIDDEN_PREFIX,
    Clock,
    JobRecord,
    JobStatus,
    ResultRecord,
    Storage,
    UniqueKey,
    WorkerRecord,
)

#: The storage capability behind each engine feature.
_FEATURE_CAPABILITY = {
    "priority": "priority", "unique_keys": "unique_keys", "progress": "progress",
    "values": "values", "rate_limit": "values", "workflows": "pipes",
}

_lock = threading.Lock()


def engine_for(storage: Storage) -> Engine:
    """The one engine of ``storage`` (made on first use), so every handle on it agrees."""
    engine = storage.__dict__.get("_plugq_engine")
    if engine is None:
        with _lock:
            engine = storage.__dict__.get("_plugq_engine")
            if engine is None:
                engine = storage.__dict__["_plugq_engine"] = Engine(storage)
    return engine


class Engine(Backend):
    """plugq's lifecycle over ``storage``; get one with :func:`engine_for`."""

    features = frozenset({
        "repeat", "group", "commands", "results", "callback_timeout", "on_stopped", "webhooks",
        "retry_result",
    })
    worker_options = frozenset({
        "exception_handlers", "disable_default_exception_handler", "work_horse_killed_handler",
        "serializer",
    })

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage.url)
        #: The primitives this engine composes.
        self.storage = storage
        self.scheme = storage.scheme  # type: ignore[misc]
        # rq 2.x's features run on every storage; plugq's beyond RQ follow
        # the storage's capabilities (a feature without its capability: NotSupportedError).
        self.features = type(self).features | frozenset(
            f for f, cap in _FEATURE_CAPABILITY.items() if cap in storage.capabilities
        )

    @property
    def clock(self) -> Clock:  # type: ignore[override]  # the storage's, never set on the engine
        """The storage's clock (one clock per store)."""
        return self.storage.clock

    def safe_url(self) -> str:
        return self.storage.safe_url()

    def __repr__(self) -> str:
        return f"<Engine over {self.storage!r}>"

    # -- jobs ---------------------------------------------------------------

    def enqueue_jobs(self, records: Sequence[JobRecord], *, unique: bool = False) -> list[JobRecord]:
        return _lifecycle.enqueue(self.storage, records, unique=unique)

    def fetch_job(self, job_id: str) -> JobRecord | None:
        return _lifecycle.visible(self.storage, self.storage.get(job_id))

    def fetch_jobs(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        storage = self.storage
        return [_lifecycle.visible(storage, rec) for rec in storage.get_many(job_ids)]

    def delete_job(self, job_id: str) -> None:
        self.storage.remove(job_id)
        self.storage.remove_results(job_id)

    def enqueue_dependents(self, job_id: str) -> None:
        rec = self.storage.get(job_id)
        if rec is not None:
            _lifecycle.enqueue_dependents(self.storage, rec)

    def job_results(self, job_id: str) -> list[ResultRecord]:
        return self.storage.results(job_id, now=self.clock.now())

    def send_command(self, worker_name: str, command: dict[str, str]) -> None:
        self.storage.send_command(worker_name, command)

    def add_to_group(self, group: str, job_ids: Sequence[str]) -> None:
        self.storage.add_to_group(group, job_ids)

    def group_members(self, group: str) -> list[str]:
        return self.storage.group_members(group)

    def remove_from_group(self, group: str, job_ids: Sequence[str]) -> None:
        self.storage.remove_from_group(group, job_ids)

    def groups(self) -> list[str]:
        return self.storage.groups()

    def save_meta(self, job_id: str, meta: bytes) -> None:
        if not self.storage.set_meta(job_id, meta):
            raise NoSuchJobError(f"No such job: {job_id}")

    def cancel_job(self, job_id: str) -> JobRecord:
        return _lifecycle.cancel(self.storage, job_id)

    def requeue_job(self, job_id: str, *, at_front: bool = False) -> JobRecord:
        return _lifecycle.requeue(self.storage, job_id, at_front=at_front)

    # -- queues and registries ----------------------------------------------

    def queue_names(self) -> list[str]:
        # The storage's side records (results history, groups, commands) sit
        # under origins no queue can have.
        return [q for q in self.storage.queues() if not q.startswith(HIDDEN_PREFIX)]

    def job_ids(self, queue: str, status: JobStatus, offset: int = 0, length: int = -1) -> list[str]:
        return self.storage.ids(queue, status, offset, length, now=self.clock.now())

    def count(self, queue: str, status: JobStatus) -> int:
        return self.storage.count_status(queue, status, now=self.clock.now())

    def empty_queue(self, queue: str) -> int:
        return self.storage.remove_queued(queue)

    def delete_queue(self, queue: str, *, delete_jobs: bool = True) -> None:
        _lifecycle.delete_queue(self.storage, queue, delete_jobs=delete_jobs)

    def remove_from_registry(
        self, queue: str, status: JobStatus, job_id: str, *, delete_job: bool = False
    ) -> None:
        _lifecycle.remove_from_registry(self.storage, queue, status, job_id, delete_job=delete_job)

    # -- workers --------------------------------------------------------------

    def run_worker(
        self, worker: WorkerSpec, *, burst: bool, max_jobs: int | None, with_scheduler: bool
    ) -> bool:
        # The worker class (simple, fork, spawn) is checked and run by the loop
        # (plugq._process): fork and spawn are refused on a process_local storage.
        return WorkerLoop(self, worker).run(
            burst=burst, max_jobs=max_jobs, with_scheduler=with_scheduler
        )

    def run_sync(self, record: JobRecord) -> JobRecord:
        return run_sync(self, record)

    def workers(self) -> list[WorkerRecord]:
        return self.storage.list_workers()

    def maintenance(self) -> None:
        _lifecycle.maintenance(self.storage)
        report_quarantined(self, None)

    def close(self) -> None:
        self.storage.close()

    # -- beyond RQ --------------------------------------------------------------

    def enqueue_unique(self, records: Sequence[JobRecord], key: UniqueKey) -> list[JobRecord]:
        self.require("unique_keys")
        return _lifecycle.enqueue(self.storage, records, unique=False, unique_keys=[key])

    def set_progress(self, job_id: str, progress: str) -> None:
        self.require("progress")
        if not self.storage.set_progress(job_id, progress):
            raise NoSuchJobError(f"No such job: {job_id}")

    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        self.require("progress")
        return self.storage.get_progress(job_ids)

    def get_value(self, key: str) -> str | None:
        self.require("values")
        return self.storage.get_value(key)

    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        self.require("values")
        return self.storage.swap_value(key, expected, new)

    def values(self, prefix: str) -> dict[str, str]:
        self.require("values")
        return self.storage.values(prefix)
