"""``Job``: a handle on one stored job, with RQ 2.x's attributes and methods."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _events, _extras
from ._clock import to_datetime
from .exceptions import InvalidTaskError, NoSuchJobError, NotSupportedError
from .security import load_arguments, load_stored
from .serializers import get_serializer
from .storage import JobRecord, JobStatus

if TYPE_CHECKING:
    from .backend import Backend
    from .progress import Progress
    from .results import Result

_FORBIDDEN_ID_CHARS = set(" \t\r\n:/\\*?[]{}\x00")


def validate_job_id(job_id: str) -> str:
    """Refuse ids that would break keys, URLs or logs.

    Raises:
        ValueError: naming the offending characters.
    """
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
    bad = sorted(set(job_id) & _FORBIDDEN_ID_CHARS)
    if bad or len(job_id) > 200:
        what = f"characters {''.join(bad)!r}" if bad else "more than 200 characters"
        raise ValueError(
            f"job_id {job_id!r} has {what}; use letters, digits, '-', '_' and '.'"
        )
    return job_id


#: The first hex digit of a uuid4's fourth group for each random one: variant bits 10.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_job_id() -> str:
    """A uuid4 string, as ``str(uuid.uuid4())`` but in a quarter of the time (one per enqueue)."""
    h = os.urandom(16).hex()
    # The version nibble is 4 and the variant bits are 10, exactly as uuid4() sets them.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def func_path(func: Callable[..., Any] | str) -> str:
    """The importable dotted path of a task, or a clear refusal.

    Raises:
        InvalidTaskError: a lambda, a nested function, a ``__main__`` function,
            or anything else a worker in another process could not import.
    """
    if isinstance(func, str):
        if "." not in func or func.startswith(".") or func.endswith("."):
            raise InvalidTaskError(f"task {func!r} must be a dotted path such as 'tasks.send_mail'")
        return func
    if inspect.ismethod(func):
        owner = func.__self__
        if inspect.isclass(owner):
            return f"{func_path(owner)}.{func.__name__}"
        raise InvalidTaskError(
            f"cannot enqueue the bound method {func.__qualname__}: an instance cannot be "
            "imported by a worker; enqueue a module-level function or a classmethod"
        )
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if module is None or qualname is None:
        if callable(func) and hasattr(type(func), "__call__"):  # noqa: B004
            raise InvalidTaskError(
                f"cannot enqueue the callable object {func!r}: enqueue a module-level function"
            )
        raise InvalidTaskError(f"cannot enqueue {func!r}: it is not a function")
    if qualname == "<lambda>" or "<lambda>" in qualname:
        raise InvalidTaskError(
            f"cannot enqueue a lambda ({module}.{qualname}): a worker cannot import it; "
            "define a module-level function"
        )
    if "<locals>" in qualname:
        raise InvalidTaskError(
            f"cannot enqueue the nested function {qualname} from {module}: a worker cannot "
            "import it; move it to module level"
        )
    if module == "__main__":
        raise InvalidTaskError(
            f"cannot enqueue {qualname} from __main__: a worker in another process would "
            "import a different __main__; move the function into a module (e.g. tasks.py)"
        )
    return f"{module}.{qualname}"


def describe(func_name: str, args: Any, kwargs: Any) -> str:
    """RQ's description format: ``tasks.f('x', n=1)``."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{func_name}({', '.join(parts)})"


#: ``plugq.queue.Queue``, registered by that module (it imports this one).
_queue_class: list[Any] = []


def register_queue_class(cls: Any) -> None:
    """Called once by :mod:`plugq.queue`, so ``Job.create`` and registries can make queues."""
    _queue_class[:] = [cls]


class Execution:
    """One run of a job by a worker (rq 2.x's ``Execution``)."""

    def __init__(self, job: Job, worker_name: str, started: float, heartbeat: float | None) -> None:
        self.job = job
        self.job_id = job.id
        self.worker_name = worker_name
        self.id = f"{job.id}:{worker_name}"
        self.created_at = to_datetime(started)
        self.last_heartbeat = to_datetime(heartbeat if heartbeat is not None else started)

    def __repr__(self) -> str:
        return f"Execution({self.id!r})"


class Job:
    """A job stored in a backend. Attribute names and behaviour follow RQ 2.x."""

    def __init__(self, backend: Backend, record: JobRecord) -> None:
        self.connection = backend
        self._backend = backend
        self._record = record
        self._args: tuple[Any, ...] | None = None
        self._kwargs: dict[str, Any] | None = None
        self._meta: dict[str, Any] | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def fetch(cls, id: str, connection: Any = None) -> Job:
        """Load a job by id.

        Raises:
            NoSuchJobError: no job with that id (or it expired).
        """
        from .connection import resolve_connection

        backend = resolve_connection(connection)
        record = backend.fetch_job(id)
        if record is None:
            raise NoSuchJobError(f"No such job: {id}")
        return cls(backend, record)

    @classmethod
    def create(
        cls,
        func: Callable[..., Any] | str,
        args: Any = None,
        kwargs: dict[str, Any] | None = None,
        connection: Any = None,
        result_ttl: Any = None,
        ttl: Any = None,
        description: str | None = None,
        depends_on: Any = None,
        timeout: Any = None,
        id: str | None = None,
        origin: str = "default",
        meta: dict[str, Any] | None = None,
        failure_ttl: Any = None,
        serializer: Any = None,
        on_success: Any = None,
        on_failure: Any = None,
        on_stopped: Any = None,
        retry: Any = None,
        repeat: Any = None,
        at_front: bool = False,
    ) -> Job:
        """A job not stored yet (rq's ``Job.create``); store it with ``queue.enqueue_job(job)``.

        Raises:
            TypeError: ``args`` is not a tuple or list (as rq), or ``kwargs`` not a dict.
        """
        Queue = _queue_class[0]
        if args is not None and not isinstance(args, (tuple, list)):
            raise TypeError(f"{args!r} is not a valid args list")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise TypeError(f"{kwargs!r} is not a valid kwargs dict")
        queue = Queue(origin or "default", connection=connection, serializer=serializer)
        data = Queue.prepare_data(
            func, args, kwargs, timeout=timeout, result_ttl=result_ttl, ttl=ttl,
            failure_ttl=failure_ttl, description=description, job_id=id, at_front=at_front,
            meta=meta, retry=retry, on_success=on_success, on_failure=on_failure,
            depends_on=depends_on, repeat=repeat, on_stopped=on_stopped,
        )
        return cls(queue.backend, queue._record(data))

    @classmethod
    def fetch_many(cls, job_ids: list[str], connection: Any = None) -> list[Job | None]:
        """Load several jobs; None where an id does not exist."""
        from .connection import resolve_connection

        backend = resolve_connection(connection)
        return [None if r is None else cls(backend, r) for r in backend.fetch_jobs(job_ids)]

    @classmethod
    def exists(cls, job_id: str, connection: Any = None) -> bool:
        from .connection import resolve_connection

        return resolve_connection(connection).fetch_job(job_id) is not None

    @staticmethod
    def key_for(job_id: str) -> bytes:
        """RQ's Redis key for a job id (``b'rq:job:<id>'``), for code that builds keys."""
        return f"rq:job:{job_id}".encode()

    # -- identity -------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._record.id

    def get_id(self) -> str:
        """The job id (RQ 1.x API, kept because the getting-started guide uses it)."""
        return self._record.id

    @property
    def key(self) -> bytes:
        return self.key_for(self.id)

    @property
    def record(self) -> JobRecord:
        """The stored data behind this handle (as last fetched)."""
        return self._record

    def __repr__(self) -> str:
        return f"Job({self.id!r}, enqueued_at={self.enqueued_at!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # -- what was enqueued ----------------------------------------------------

    @property
    def origin(self) -> str:
        return self._record.origin

    @property
    def func_name(self) -> str:
        return self._record.func_name

    @property
    def description(self) -> str:
        return self._record.description

    @property
    def serializer(self) -> str:
        return self._record.serializer

    def _load_payload(self) -> None:
        args, kwargs = load_arguments(self._record, verified_by_backend=self._verified_by_backend())
        self._args, self._kwargs = tuple(args), dict(kwargs)

    @property
    def args(self) -> tuple[Any, ...]:
        if self._args is None:
            self._load_payload()
        assert self._args is not None
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        if self._kwargs is None:
            self._load_payload()
        assert self._kwargs is not None
        return self._kwargs

    @property
    def func(self) -> Callable[..., Any]:
        from ._execution import resolve

        return resolve(self.func_name)

    @property
    def data(self) -> bytes:
        """The serialized ``(args, kwargs)``, as RQ's ``job.data``."""
        return self._record.payload

    # -- times and settings ---------------------------------------------------

    @property
    def created_at(self) -> datetime | None:
        return to_datetime(self._record.created_at or None)

    @property
    def enqueued_at(self) -> datetime | None:
        return to_datetime(self._record.enqueued_at)

    @property
    def started_at(self) -> datetime | None:
        return to_datetime(self._record.started_at)

    @property
    def ended_at(self) -> datetime | None:
        return to_datetime(self._record.ended_at)

    @property
    def scheduled_for(self) -> datetime | None:
        return to_datetime(self._record.scheduled_for)

    @property
    def timeout(self) -> float | None:
        t = self._record.timeout
        return None if t is None else (int(t) if float(t).is_integer() else t)

    @property
    def result_ttl(self) -> int:
        return self._record.result_ttl

    @property
    def failure_ttl(self) -> int:
        return self._record.failure_ttl

    @property
    def ttl(self) -> int | None:
        return self._record.ttl

    @property
    def retries_left(self) -> int | None:
        return self._record.retries_left

    @property
    def retry_intervals(self) -> list[float]:
        return list(self._record.retry_intervals)

    @property
    def worker_name(self) -> str | None:
        return self._record.worker_name

    @property
    def dependency_ids(self) -> list[str]:
        return list(self._record.depends_on)

    def fetch_dependencies(self, watch: bool = False, pipeline: Any = None) -> list[Job]:
        """The jobs this one depends on that still exist, in ``depends_on`` order (RQ's).

        Raises:
            NotSupportedError: ``watch`` or ``pipeline`` given; they are RQ's
                Redis-transaction arguments, which no plugq backend honours.
        """
        if watch or pipeline is not None:
            raise NotSupportedError(
                "fetch_dependencies(watch=…, pipeline=…) takes part in a Redis transaction "
                "in RQ; plugq fetches the dependencies without one"
            )
        ids = self.dependency_ids
        if not ids:
            return []
        return [Job(self._backend, r) for r in self._backend.fetch_jobs(ids) if r is not None]

    @property
    def attempts(self) -> int:
        """How many times a worker started this job."""
        return self._record.attempts

    # -- status ---------------------------------------------------------------

    def refresh(self) -> None:
        """Reload from the store.

        Raises:
            NoSuchJobError: the job was deleted or expired.
        """
        record = self._backend.fetch_job(self.id)
        if record is None:
            raise NoSuchJobError(f"No such job: {self.id}")
        self._record = record
        self._args = self._kwargs = None
        self._meta = None

    def get_status(self, refresh: bool = True) -> JobStatus:
        """The job's status (reloaded unless ``refresh=False``).

        Raises:
            NoSuchJobError: the job was deleted or expired.
        """
        if refresh:
            self.refresh()
        return self._record.status

    @property
    def is_queued(self) -> bool:
        return self.get_status() is JobStatus.QUEUED

    @property
    def is_started(self) -> bool:
        return self.get_status() is JobStatus.STARTED

    @property
    def is_finished(self) -> bool:
        return self.get_status() is JobStatus.FINISHED

    @property
    def is_failed(self) -> bool:
        return self.get_status() is JobStatus.FAILED

    @property
    def is_deferred(self) -> bool:
        return self.get_status() is JobStatus.DEFERRED

    @property
    def is_scheduled(self) -> bool:
        return self.get_status() is JobStatus.SCHEDULED

    @property
    def is_canceled(self) -> bool:
        return self.get_status() is JobStatus.CANCELED

    @property
    def is_stopped(self) -> bool:
        return self.get_status() is JobStatus.STOPPED

    # -- outcome --------------------------------------------------------------

    def return_value(self, refresh: bool = True) -> Any:
        """The stored return value, or None while the job has not finished."""
        if refresh:
            record = self._backend.fetch_job(self.id)
            if record is None:
                return None
            self._record = record
        if self._record.status is not JobStatus.FINISHED or self._record.result is None:
            return None
        return load_stored(self._record, "result", self._record.result,
                           verified_by_backend=self._verified_by_backend())

    @property
    def result(self) -> Any:
        """Alias of :meth:`return_value` (RQ's ``job.result``)."""
        return self.return_value()

    @property
    def exc_info(self) -> str | None:
        """Traceback text of the last failure (refreshed), or None."""
        record = self._backend.fetch_job(self.id)
        if record is not None:
            self._record = record
        return self._record.exc_info

    def latest_result(self, timeout: float = 0) -> Result | None:
        """The job's latest outcome as a :class:`~plugq.results.Result` (None before one).

        With ``timeout`` (seconds), wait up to that long for the job to end
        (rq's ``latest_result(timeout=60)``).
        """
        from .results import Result

        deadline = time.monotonic() + timeout
        while True:
            record = self._backend.fetch_job(self.id)
            if record is not None:
                self._record = record
            ended = self._record.status not in (
                JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
            if ended or timeout <= 0 or time.monotonic() >= deadline:
                if not ended and self._record.attempts == 0:
                    return None
                return Result.from_record(self._record, self._load_result)
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def results(self) -> list[Result]:
        """Every kept outcome, newest first (rq keeps 10): the latest, then earlier runs.

        Raises:
            NotSupportedError: the backend keeps no results history.
        """
        from .results import Result

        history = [Result.from_entry(e, self._load_result)
                   for e in self._backend.job_results(self.id)]
        latest = self.latest_result()
        return ([latest] if latest is not None else []) + history[: 9 if latest else 10]

    def _load_result(self, blob: bytes) -> Any:
        return load_stored(self._record, "result", blob,
                           verified_by_backend=self._verified_by_backend())

    def get_executions(self) -> list[Execution]:
        """The job's current executions (one while a worker runs it, else none)."""
        self.refresh()
        r = self._record
        if r.status is not JobStatus.STARTED or r.started_at is None:
            return []
        return [Execution(self, r.worker_name or "", r.started_at, self._worker_heartbeat())]

    def _worker_heartbeat(self) -> float | None:
        name = self._record.worker_name
        if not name:
            return None
        for w in self._backend.workers():
            if w.name == name:
                return w.last_heartbeat
        return None

    @property
    def last_heartbeat(self) -> datetime | None:
        """When the worker running this job last reported alive (None when not running; reloads)."""
        record = self._backend.fetch_job(self.id)
        if record is not None:
            self._record = record
        if self._record.status is not JobStatus.STARTED:
            return None
        return to_datetime(self._worker_heartbeat() or self._record.started_at)

    def get_position(self) -> int | None:
        """The job's 0-based place in its queue, or None when it is not queued."""
        ids = self._backend.job_ids(self.origin, JobStatus.QUEUED)
        try:
            return ids.index(self.id)
        except ValueError:
            return None

    @property
    def repeats_left(self) -> int | None:
        """Repetitions still to come (``Repeat``), or None for a job without one."""
        repeat = _extras.read(self._record).get("repeat")
        return None if repeat is None else int(repeat["left"])

    @property
    def repeat_intervals(self) -> list[float] | None:
        repeat = _extras.read(self._record).get("repeat")
        return None if repeat is None else [
            int(v) if float(v).is_integer() else v for v in repeat["intervals"]]

    @property
    def group_id(self) -> str | None:
        """The :class:`~plugq.group.Group` this job was enqueued in, if any."""
        return _extras.read(self._record).get("group")

    # -- meta -----------------------------------------------------------------

    def _verified_by_backend(self) -> bool:
        # A backend that signs in its own format (rq's, on Redis) has checked
        # meta and results before they reached the record.
        return bool(getattr(self._backend, "verifies_stored_blobs", False))

    @property
    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = _extras.split(
                self._record, verified_by_backend=self._verified_by_backend())[0]
        return self._meta

    @meta.setter
    def meta(self, value: dict[str, Any]) -> None:
        self._meta = dict(value)

    def get_meta(self, refresh: bool = True) -> dict[str, Any]:
        if refresh:
            self.refresh()
        return self.meta

    def save_meta(self) -> None:
        """Store ``job.meta`` (only meta: a running job's status is not touched)."""
        data = _extras.join(
            self.id, self._record.serializer, self.meta,
            _extras.read(self._record, verified_by_backend=self._verified_by_backend()),
        )
        self._backend.save_meta(self.id, data)
        self._record.meta = data

    # -- progress (plugq's) -----------------------------------------------------

    def set_progress(
        self, fraction: float | None = None, *, done: float | None = None,
        total: float | None = None, message: str | None = None,
    ) -> None:
        """Report progress: ``set_progress(0.5)``, ``set_progress(done=3, total=10)``, a message.

        One small write apart from the job's record (cheap enough to call per item).

        Raises:
            ValueError: a fraction outside [0, 1], done without total, nothing given.
            NoSuchJobError: the job no longer exists.
            NotSupportedError: the backend keeps no progress (a storage without ``progress``).
        """
        from .progress import make

        report = make(fraction, done, total, message, self._backend.clock.now())
        self._backend.set_progress(self.id, report.dumps())

    @property
    def progress(self) -> Progress | None:
        """What the task last reported (read from the store each time), or None."""
        from .progress import Progress

        if "progress" not in self._backend.features:
            return None
        return Progress.loads(self._backend.get_progress([self.id])[0])

    # -- operations -----------------------------------------------------------

    def cancel(self, enqueue_dependents: bool = False) -> None:
        """Cancel: a queued, deferred or scheduled job will not run.

        With ``enqueue_dependents``, jobs that depend on this one with
        ``Dependency(allow_failure=True)`` are enqueued (a canceled job has ended).

        Raises:
            InvalidJobOperation: the job is already canceled or finished.
        """
        self._record = self._backend.cancel_job(self.id)
        if enqueue_dependents:
            self._backend.enqueue_dependents(self.id)

    def requeue(self, at_front: bool = False) -> Job:
        """Put a failed, canceled or stopped job back on its queue.

        Raises:
            InvalidJobOperation: the job is in another state.
        """
        self._record = self._backend.requeue_job(self.id, at_front=at_front)
        return self

    def delete(self, delete_dependents: bool = False) -> None:
        """Delete the job from the store, its queue and every registry."""
        if delete_dependents:
            for dep_id in self._dependents_ids():
                self._backend.delete_job(dep_id)
        self._backend.delete_job(self.id)

    def _dependents_ids(self) -> list[str]:
        return [
            rid
            for rid in self._backend.job_ids(self.origin, JobStatus.DEFERRED)
            if (r := self._backend.fetch_job(rid)) is not None and self.id in r.depends_on
        ]

    def to_dict(self) -> dict[str, Any]:
        """The job as RQ's ``Job.to_dict()`` lays it out (strings, bytes data)."""
        r = self._record

        def iso(ts: float | None) -> str:
            dt = to_datetime(ts)
            return "" if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        d: dict[str, Any] = {
            "created_at": iso(r.created_at or None),
            "data": r.payload,
            "success_callback_name": r.on_success or "",
            "failure_callback_name": r.on_failure or "",
            "started_at": iso(r.started_at),
            "ended_at": iso(r.ended_at),
            "last_heartbeat": iso(r.started_at),  # the worker's beat lives on the worker
            "worker_name": r.worker_name or "",
            "origin": r.origin,
            "description": r.description,
            "enqueued_at": iso(r.enqueued_at),
            "status": r.status.value,
            "timeout": -1 if r.timeout is None else self.timeout,
            "meta": get_serializer(r.serializer).dumps(self.meta) if r.meta else r.meta,
            "serializer": r.serializer,
            "func_name": r.func_name,
            "result_ttl": r.result_ttl,
            "failure_ttl": r.failure_ttl,
        }
        if r.ttl is not None:
            d["ttl"] = r.ttl
        if r.exc_info is not None:
            d["exc_info"] = r.exc_info
        if r.retries_left is not None:
            d["retries_left"] = r.retries_left
            d["retry_intervals"] = list(r.retry_intervals)
        if r.depends_on:
            d["dependency_ids"] = list(r.depends_on)
        return d


def cancel_job(
    job_id: str, connection: Any = None, serializer: Any = None, enqueue_dependents: bool = False,
) -> None:
    """Cancel the job ``job_id`` (rq's ``rq.cancel_job``); see :meth:`Job.cancel`.

    Raises:
        NoSuchJobError: no such job.
        InvalidJobOperation: the job is already canceled or finished.
    """
    Job.fetch(job_id, connection=connection).cancel(enqueue_dependents=enqueue_dependents)


def requeue_job(job_id: str, connection: Any = None, serializer: Any = None) -> Job:
    """Requeue a failed, canceled or stopped job (rq's ``rq.requeue_job``)."""
    return Job.fetch(job_id, connection=connection).requeue()


_events.register_job_class(Job)
