"""``Queue``: enqueue jobs and look at a named queue, with RQ 2.x's API."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from . import _events
from ._validate import check_queue_name, number_error
from .backend import Backend
from .job import Job, describe, func_path, new_job_id, validate_job_id
from .registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from .retry import Retry, dependency_ids
from .security import seal, seal_blob
from .serializers import Serializer, get_serializer
from .storage import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL, DEFAULT_TIMEOUT, JobRecord, JobStatus

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_timeout(value: Any, what: str = "job_timeout") -> float | None:
    """Seconds from an int, float or RQ-style string ('90', '5m', '1h'); -1 means none.

    Raises:
        ValueError: zero, negative (other than -1) or unparseable values.
    """
    if value is None:
        return None
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{what}={value!r} is not a duration; use seconds or '30s', '5m', '1h'")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    problem = number_error(value, what, minimum=0, exclusive=True, allow_none_marker=True)
    if problem is not None:
        raise ValueError(f"{problem} (-1 means no timeout)")
    return float(value)


def _ttl(value: Any, what: str, minimum: int) -> int | None:
    if value is None:
        return None
    problem = number_error(value, what, minimum=minimum)
    if problem is not None:
        raise ValueError(problem)
    return int(value)


def _callback_path(cb: Any, what: str) -> str | None:
    if cb is None:
        return None
    func = getattr(cb, "func", cb)  # rq.Callback(func) or a plain function
    return func_path(func)


class EnqueueData(NamedTuple):
    """One job of an :meth:`Queue.enqueue_many` batch (see :meth:`Queue.prepare_data`)."""

    func: Any
    args: Sequence[Any]
    kwargs: dict[str, Any]
    timeout: Any
    result_ttl: Any
    ttl: Any
    failure_ttl: Any
    description: str | None
    job_id: str | None
    at_front: bool
    meta: dict[str, Any] | None
    retry: Retry | None
    on_success: Any
    on_failure: Any
    depends_on: Any


class Queue:
    """A named queue on a backend; ``connection`` is None, a URL, a backend or a client."""

    DEFAULT_TIMEOUT = DEFAULT_TIMEOUT

    def __init__(
        self,
        name: str = "default",
        connection: Any = None,
        is_async: bool = True,
        default_timeout: Any = None,
        serializer: str | Serializer | None = None,
        **kwargs: Any,
    ) -> None:
        from .connection import resolve_connection

        self.name = check_queue_name(name)
        self.backend: Backend = resolve_connection(connection)
        self.connection = self.backend
        self._is_async = is_async
        # [tool.plugq] supplies the defaults an explicit argument did not
        # (current_settings() is cached: pyproject is not re-read per queue).
        from .config import current_settings

        configured = current_settings()
        self.serializer = get_serializer(serializer if serializer is not None
                                         else configured.serializer)
        self._default_timeout = (parse_timeout(default_timeout, "default_timeout")
                                 if default_timeout is not None else configured.job_timeout)
        self._default_result_ttl: int | None = configured.result_ttl

    # -- identity -------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Queue) and other.name == self.name and other.backend is self.backend

    def __hash__(self) -> int:
        return hash((self.name, id(self.backend)))

    @property
    def key(self) -> str:
        return f"rq:queue:{self.name}"

    @property
    def is_async(self) -> bool:
        return self._is_async

    @classmethod
    def all(cls, connection: Any = None) -> list[Queue]:
        """Every queue that has held a job on this backend."""
        from .connection import resolve_connection

        backend = resolve_connection(connection)
        return [cls(name, connection=backend) for name in backend.queue_names()]

    # -- looking --------------------------------------------------------------

    @property
    def count(self) -> int:
        return self.backend.count(self.name, JobStatus.QUEUED)

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return True

    def is_empty(self) -> bool:
        return self.count == 0

    def get_job_ids(self, offset: int = 0, length: int = -1) -> list[str]:
        """Queued job ids in the order workers will take them."""
        return self.backend.job_ids(self.name, JobStatus.QUEUED, offset, length)

    @property
    def job_ids(self) -> list[str]:
        return self.get_job_ids()

    def get_jobs(self, offset: int = 0, length: int = -1) -> list[Job]:
        ids = self.get_job_ids(offset, length)
        return [Job(self.backend, r) for r in self.backend.fetch_jobs(ids) if r is not None]

    @property
    def jobs(self) -> list[Job]:
        return self.get_jobs()

    def fetch_job(self, job_id: str) -> Job | None:
        """The job if it exists and belongs to this queue, else None (as RQ)."""
        record = self.backend.fetch_job(job_id)
        if record is None or record.origin != self.name:
            return None
        return Job(self.backend, record)

    # -- registries -----------------------------------------------------------

    @property
    def started_job_registry(self) -> StartedJobRegistry:
        return StartedJobRegistry(queue=self)

    @property
    def finished_job_registry(self) -> FinishedJobRegistry:
        return FinishedJobRegistry(queue=self)

    @property
    def failed_job_registry(self) -> FailedJobRegistry:
        return FailedJobRegistry(queue=self)

    @property
    def deferred_job_registry(self) -> DeferredJobRegistry:
        return DeferredJobRegistry(queue=self)

    @property
    def scheduled_job_registry(self) -> ScheduledJobRegistry:
        return ScheduledJobRegistry(queue=self)

    @property
    def canceled_job_registry(self) -> CanceledJobRegistry:
        return CanceledJobRegistry(queue=self)

    # -- removing -------------------------------------------------------------

    def empty(self) -> int:
        """Delete every queued job; returns how many were removed."""
        return self.backend.empty_queue(self.name)

    def delete(self, delete_jobs: bool = True) -> None:
        self.backend.delete_queue(self.name, delete_jobs=delete_jobs)

    def remove(self, job_or_id: Job | str) -> None:
        job_id = job_or_id.id if isinstance(job_or_id, Job) else job_or_id
        record = self.backend.fetch_job(job_id)
        if record is not None and record.status is JobStatus.QUEUED and record.origin == self.name:
            self.backend.delete_job(job_id)

    # -- enqueueing -----------------------------------------------------------

    @staticmethod
    def prepare_data(
        func: Any,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        timeout: Any = None,
        result_ttl: Any = None,
        ttl: Any = None,
        failure_ttl: Any = None,
        description: str | None = None,
        job_id: str | None = None,
        at_front: bool = False,
        meta: dict[str, Any] | None = None,
        retry: Retry | None = None,
        on_success: Any = None,
        on_failure: Any = None,
        depends_on: Any = None,
    ) -> EnqueueData:
        """Describe one job for :meth:`enqueue_many`, as RQ's ``Queue.prepare_data``."""
        return EnqueueData(
            func, args or (), kwargs or {}, timeout, result_ttl, ttl, failure_ttl,
            description, job_id, at_front, meta, retry, on_success, on_failure, depends_on,
        )

    def _record(self, data: EnqueueData, *, status: JobStatus = JobStatus.QUEUED,
                scheduled_for: float | None = None) -> JobRecord:
        name = func_path(data.func)
        args, kwargs = tuple(data.args), dict(data.kwargs)
        ser = self.serializer
        timeout = parse_timeout(data.timeout) if data.timeout is not None else self._default_timeout
        if timeout is None:
            timeout = DEFAULT_TIMEOUT
        result_ttl = _ttl(data.result_ttl, "result_ttl", -1)
        failure_ttl = _ttl(data.failure_ttl, "failure_ttl", -1)
        ttl = _ttl(data.ttl, "ttl", -1)
        dep_ids, allow_failure, dep_front = dependency_ids(data.depends_on)
        retry = data.retry
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a plugq.Retry, got {retry!r}")
        job_id = validate_job_id(data.job_id) if data.job_id is not None else new_job_id()
        on_success = _callback_path(data.on_success, "on_success")
        on_failure = _callback_path(data.on_failure, "on_failure")
        if job_id in dep_ids:
            raise ValueError(f"job {job_id} cannot depend on itself")
        rec = JobRecord(
            id=job_id,
            func_name=name,
            origin=self.name,
            payload=b"",
            serializer=ser.name,
            status=status,
            description=data.description or describe(name, args, kwargs),
            created_at=self.backend.clock.now(),
            timeout=None if timeout == -1 else timeout,
            result_ttl=(result_ttl if result_ttl is not None
                        else self._default_result_ttl if self._default_result_ttl is not None
                        else DEFAULT_RESULT_TTL),
            failure_ttl=DEFAULT_FAILURE_TTL if failure_ttl is None else failure_ttl,
            ttl=None if ttl in (None, -1) else ttl,
            meta=seal_blob(job_id, "meta", ser.dumps(dict(data.meta))) if data.meta else b"",
            retries_left=retry.max if retry else None,
            retry_intervals=list(retry.intervals) if retry else [],
            depends_on=dep_ids,
            allow_dependency_failure=allow_failure,
            on_success=on_success,
            on_failure=on_failure,
            scheduled_for=scheduled_for,
            at_front=bool(data.at_front or dep_front),
        )
        # Sealed last: the MAC covers the record's id, queue, callbacks and dependencies.
        rec.payload = seal(rec, ser.dumps((list(args) if ser.name == "json" else args, kwargs)))
        return rec

    @staticmethod
    def _split(
        f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[EnqueueData, bool, Any]:
        # The common enqueue(f, *args) has no keyword arguments: skip the scan.
        reserved = {
            k: kwargs.pop(k)
            for k in (
                "job_timeout", "timeout", "result_ttl", "ttl", "failure_ttl", "description",
                "depends_on", "job_id", "at_front", "meta", "retry", "on_success",
                "on_failure", "unique", "pipeline",
            )
            if k in kwargs
        } if kwargs else {}
        if "args" in kwargs or "kwargs" in kwargs:
            if args:
                raise TypeError(
                    "enqueue() got positional arguments and args=/kwargs=; use one or the other"
                )
            args = tuple(kwargs.pop("args", None) or ())
            kwargs = dict(kwargs.pop("kwargs", None) or {})
        timeout = reserved.get("job_timeout", reserved.get("timeout"))
        data = EnqueueData(
            f, args, kwargs, timeout, reserved.get("result_ttl"), reserved.get("ttl"),
            reserved.get("failure_ttl"), reserved.get("description"), reserved.get("job_id"),
            bool(reserved.get("at_front", False)), reserved.get("meta"), reserved.get("retry"),
            reserved.get("on_success"), reserved.get("on_failure"), reserved.get("depends_on"),
        )
        return data, bool(reserved.get("unique", False)), reserved.get("pipeline")

    def _store(self, records: list[JobRecord], *, unique: bool) -> list[Job]:
        if not self._is_async:
            if len(records) != 1:
                raise ValueError("is_async=False runs one job at a time; use enqueue()")
            stored = [self.backend.run_sync(records[0])]
        else:
            stored = self.backend.enqueue_jobs(records, unique=unique)
        jobs = [Job(self.backend, r) for r in stored]
        _events.enqueued(jobs)
        return jobs

    def enqueue(self, f: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``f(*args, **kwargs)``; RQ's reserved keyword arguments are honoured.

        Raises:
            InvalidTaskError: ``f`` cannot be imported by a worker.
            SerializationError: an argument cannot be serialized.
            DuplicateJobError: ``unique=True`` and the id is queued or running.
            ValueError: a bad ``job_id``, timeout or TTL.
        """
        data, unique, _ = self._split(f, args, kwargs)
        record = self._record(data)
        return self._store([record], unique=unique)[0]

    def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        timeout: Any = None,
        **options: Any,
    ) -> Job:
        """RQ's explicit form: ``enqueue_call(func, args=…, kwargs=…, timeout=…)``."""
        unique = bool(options.pop("unique", False))
        options.pop("pipeline", None)
        if "job_timeout" in options:
            timeout = options.pop("job_timeout")
        data = self.prepare_data(func, args, kwargs, timeout=timeout, **options)
        record = self._record(data)
        return self._store([record], unique=unique)[0]

    def enqueue_many(self, job_datas: Sequence[EnqueueData], pipeline: Any = None) -> list[Job]:
        """Enqueue a batch atomically: every job is stored, or none is."""
        records = [self._record(d) for d in job_datas]
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("enqueue_many: two jobs in the batch share a job_id")
        if not self._is_async:
            return [self._store([r], unique=False)[0] for r in records]
        return self._store(records, unique=False)

    def enqueue_at(
        self, datetime_: datetime, f: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """Enqueue ``f`` to run at ``datetime_`` (aware, or naive UTC as in RQ)."""
        from ._clock import to_timestamp

        data, unique, _ = self._split(f, args, kwargs)
        record = self._record(
            data, status=JobStatus.SCHEDULED, scheduled_for=to_timestamp(datetime_)
        )
        if not self._is_async:
            # RQ runs a sync queue's scheduled job at once; so do we, through the
            # worker's path.
            record.status, record.scheduled_for = JobStatus.QUEUED, None
        return self._store([record], unique=unique)[0]

    def enqueue_in(
        self, time_delta: timedelta, f: Callable[..., Any] | str, *args: Any, **kwargs: Any
    ) -> Job:
        """Enqueue ``f`` to run after ``time_delta``."""
        if not isinstance(time_delta, timedelta):
            raise TypeError(f"enqueue_in takes a datetime.timedelta, got {time_delta!r}")
        when = self.backend.clock.now_datetime() + time_delta
        return self.enqueue_at(when, f, *args, **kwargs)
