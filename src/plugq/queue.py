"""``Queue``: enqueue jobs and look at a named queue, with RQ 2.x's API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from . import _events, _extras
from ._clock import parse_timeout
from ._validate import check_queue_name, number_error
from .backend import Backend, Pipeline
from .callbacks import Callback
from .job import Job, describe, func_path, new_job_id, register_queue_class, validate_job_id
from .ratelimit import RateLimit
from .registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from .retry import Retry, dependency_ids
from .security import seal, seal_blob, secret_key, unseal
from .serializers import Serializer, get_serializer
from .storage import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL, DEFAULT_TIMEOUT, JobRecord, JobStatus
from .unique import Unique


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


def _extras_for(data: EnqueueData, backend: Backend, job_id: str) -> dict[str, Any]:
    """The rq 2.x options that ride in the job's extras (see :mod:`plugq._extras`).

    Raises:
        NotSupportedError: the backend cannot honour one of them.
        TypeError: a ``repeat`` or webhook of the wrong type.
    """
    from .callbacks import Webhook
    from .retry import Repeat
    from .security import sign_fields

    extras: dict[str, Any] = {}
    if data.repeat is not None:
        if not isinstance(data.repeat, Repeat):
            raise TypeError(f"repeat must be a plugq.Repeat, got {data.repeat!r}")
        backend.require("repeat", "enqueue(repeat=Repeat(...))")
        extras["repeat"] = {"times": data.repeat.times, "left": data.repeat.times,
                            "intervals": list(data.repeat.intervals)}
    timeouts = {
        kind: cb.timeout
        for kind, cb in (("success", data.on_success), ("failure", data.on_failure),
                         ("stopped", data.on_stopped))
        if isinstance(cb, Callback) and cb.timeout != 60
    }
    if timeouts:
        backend.require("callback_timeout", "Callback(func, timeout=...)")
        extras["callback_timeouts"] = timeouts
    if data.on_stopped is not None:
        backend.require("on_stopped", "enqueue(on_stopped=...)")
        extras["on_stopped"] = _callback_path(data.on_stopped, "on_stopped")
    if data.webhooks:
        backend.require("webhooks", "enqueue(webhooks=[Webhook(...)])")
        hooks = []
        for hook in data.webhooks:
            if not isinstance(hook, Webhook):
                raise TypeError(f"webhooks takes plugq.Webhook objects, got {hook!r}")
            hooks.append(hook.to_dict())
        extras["webhooks"] = hooks
    if "on_stopped" in extras or "webhooks" in extras:
        sig = sign_fields(job_id, {"webhooks": extras.get("webhooks"),
                                   "on_stopped": extras.get("on_stopped")})
        if sig is not None:
            extras["sig"] = sig
    return extras


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
    repeat: Any = None
    on_stopped: Any = None
    webhooks: Any = None
    #: higher is taken first within the queue (plugq's, not RQ's).
    priority: int = 0
    #: a ``RateLimit`` the job runs under (plugq's).
    rate_limit: Any = None


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise ValueError(
            f"priority must be a whole number between -2**31 and 2**31 - 1 (higher runs "
            f"first), got {value!r}"
        )
    return value


class Queue:
    """A named queue on a backend; ``connection`` is None, a URL, a backend or a client."""

    DEFAULT_TIMEOUT = DEFAULT_TIMEOUT

    def __init__(
        self,
        name: str = "default",
        connection: Any = None,
        is_async: bool = True,
        default_timeout: Any = None,
        serializer: str | Serializer | type[Any] | None = None,
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
        # What a job that names neither gets, as stored (worked out once, not per job).
        self._job_timeout = _stored_timeout(self._default_timeout)
        self._job_result_ttl = (DEFAULT_RESULT_TTL if self._default_result_ttl is None
                                else self._default_result_ttl)

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

    def __contains__(self, item: Job | str) -> bool:
        """Whether the job is queued on this queue (``job in queue``, as rq)."""
        job_id = item.id if isinstance(item, Job) else item
        record = self.backend.fetch_job(job_id)
        return record is not None and record.origin == self.name and record.status is JobStatus.QUEUED

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
        repeat: Any = None,
        on_stopped: Any = None,
        webhooks: Any = None,
        priority: int = 0,
        rate_limit: Any = None,
    ) -> EnqueueData:
        """Describe one job for :meth:`enqueue_many`, as RQ's ``Queue.prepare_data``."""
        # tuple.__new__ as the NamedTuple's own __new__ does, without its Python-level
        # call (one per job of a batch): every field is given here, in order.
        return tuple.__new__(EnqueueData, (
            func, args or (), kwargs or {}, timeout, result_ttl, ttl, failure_ttl,
            description, job_id, at_front, meta, retry, on_success, on_failure, depends_on,
            repeat, on_stopped, webhooks, priority, rate_limit,
        ))

    def _record(self, data: EnqueueData, *, status: JobStatus = JobStatus.QUEUED,
                scheduled_for: float | None = None, group_id: str | None = None,
                key: bytes | None = None) -> JobRecord:
        """The record for one job. ``key``: the signing key read once for a whole batch
        (``b""`` for none); None reads it here."""
        name = func_path(data.func)
        args, kwargs = tuple(data.args), dict(data.kwargs)
        ser = self.serializer
        if group_id is None and data[3:] == _NO_OPTIONS:
            # enqueue(f, *args, **kwargs) with no option, the usual job: the record
            # as the checks below would make it, without going through them.
            rec = JobRecord(
                id=new_job_id(), func_name=name, origin=self.name, payload=b"",
                serializer=ser.name, status=status, description=describe(name, args, kwargs),
                created_at=self.backend.clock.now(), timeout=self._job_timeout,
                result_ttl=self._job_result_ttl, failure_ttl=DEFAULT_FAILURE_TTL,
            )
            if scheduled_for is not None:
                rec.scheduled_for = scheduled_for
            rec.payload = seal(rec, ser.dumps((list(args) if ser.name == "json" else args, kwargs)),
                               key)
            return rec
        timeout = (self._job_timeout if data.timeout is None
                   else _stored_timeout(parse_timeout(data.timeout)))
        # The checks of options left out are skipped (a call each), not only passed.
        result_ttl = None if data.result_ttl is None else _ttl(data.result_ttl, "result_ttl", -1)
        failure_ttl = None if data.failure_ttl is None else _ttl(data.failure_ttl, "failure_ttl", -1)
        ttl = None if data.ttl is None else _ttl(data.ttl, "ttl", -1)
        dep_ids, allow_failure, dep_front = (
            ([], False, False) if data.depends_on is None else dependency_ids(data.depends_on))
        retry = data.retry
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a plugq.Retry, got {retry!r}")
        job_id = validate_job_id(data.job_id) if data.job_id is not None else new_job_id()
        on_success = None if data.on_success is None else _callback_path(data.on_success, "on_success")
        on_failure = None if data.on_failure is None else _callback_path(data.on_failure, "on_failure")
        if job_id in dep_ids:
            raise ValueError(f"job {job_id} cannot depend on itself")
        extras = _extras_for(data, self.backend, job_id) if (
            data.repeat is not None or data.on_stopped is not None or data.webhooks
            or isinstance(data.on_success, Callback) or isinstance(data.on_failure, Callback)
        ) else {}
        if extras or group_id:
            if group_id:
                extras["group"] = group_id
            meta = _extras.join(job_id, ser.name, dict(data.meta or {}), extras)
        else:
            meta = seal_blob(job_id, "meta", ser.dumps(dict(data.meta)), key) if data.meta else b""
        priority = _priority(data.priority) if data.priority else 0
        if priority:
            self.backend.require("priority")
        rate_limit = None
        if data.rate_limit is not None:
            if not isinstance(data.rate_limit, RateLimit):
                raise TypeError(f"rate_limit must be a plugq.RateLimit, got {data.rate_limit!r}")
            self.backend.require("rate_limit")
            if not self._is_async:
                raise ValueError("rate_limit needs an asynchronous queue (is_async=True)")
            rate_limit = data.rate_limit.dumps()
        rec = JobRecord(
            id=job_id,
            func_name=name,
            origin=self.name,
            payload=b"",
            serializer=ser.name,
            status=status,
            description=data.description or describe(name, args, kwargs),
            created_at=self.backend.clock.now(),
            timeout=timeout,
            result_ttl=self._job_result_ttl if result_ttl is None else result_ttl,
            failure_ttl=DEFAULT_FAILURE_TTL if failure_ttl is None else failure_ttl,
            meta=meta,
        )
        # The fields most jobs leave at their defaults are set only when given:
        # each keyword argument of the dataclass's __init__ costs, given or not.
        if ttl is not None and ttl != -1:
            rec.ttl = ttl
        if retry:
            rec.retries_left = retry.max
            rec.retry_intervals = list(retry.intervals)
        if dep_ids:
            rec.depends_on = dep_ids
        if allow_failure:
            rec.allow_dependency_failure = allow_failure
        if on_success is not None:
            rec.on_success = on_success
        if on_failure is not None:
            rec.on_failure = on_failure
        if scheduled_for is not None:
            rec.scheduled_for = scheduled_for
        if data.at_front or dep_front:
            rec.at_front = True
        if priority:
            rec.priority = priority
        if rate_limit is not None:
            rec.rate_limit = rate_limit
        # Sealed last: the MAC covers the record's id, queue, callbacks, dependencies,
        # priority and rate limit (a Unique key, set later, is sealed again by _store_unique).
        rec.payload = seal(rec, ser.dumps((list(args) if ser.name == "json" else args, kwargs)), key)
        return rec

    @staticmethod
    def _split(
        f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[EnqueueData, bool | Unique, Any]:
        if not kwargs:
            # The common enqueue(f, *args): every option at its default, no scan.
            return EnqueueData(f, args, kwargs, None, None, None, None, None, None, False, None,
                               None, None, None, None), False, None
        reserved = {
            k: kwargs.pop(k)
            for k in (
                "job_timeout", "timeout", "result_ttl", "ttl", "failure_ttl", "description",
                "depends_on", "job_id", "at_front", "meta", "retry", "on_success",
                "on_failure", "unique", "pipeline", "repeat", "on_stopped", "webhooks",
                "priority", "rate_limit",
            )
            if k in kwargs
        }
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
            reserved.get("repeat"), reserved.get("on_stopped"), reserved.get("webhooks"),
            reserved.get("priority", 0), reserved.get("rate_limit"),
        )
        unique = reserved.get("unique", False)
        return data, unique if isinstance(unique, Unique) else bool(unique), reserved.get("pipeline")

    def _store(
        self, records: list[JobRecord], *, unique: bool | Unique,
        pipeline: Pipeline | None = None,
    ) -> list[Job]:
        if pipeline is not None and self._is_async:
            if not isinstance(pipeline, Pipeline):
                raise TypeError(
                    f"pipeline must come from queue.connection.pipeline(), got {pipeline!r}"
                )
            if unique:
                raise ValueError("unique=True cannot be combined with pipeline=")
            pipeline.add(records, lambda stored: _events.enqueued(
                [Job(self.backend, r) for r in stored]))
            return [Job(self.backend, r) for r in records]
        if isinstance(unique, Unique):
            return [self._store_unique(records[0], unique)]
        if not self._is_async:
            if len(records) != 1:
                raise ValueError("is_async=False runs one job at a time; use enqueue()")
            stored = [self.backend.run_sync(records[0])]
        else:
            stored = self.backend.enqueue_jobs(records, unique=unique)
        jobs = [Job(self.backend, r) for r in stored]
        _events.enqueued(jobs)
        return jobs

    def _store_unique(self, record: JobRecord, unique: Unique) -> Job:
        """Store ``record`` unless a job holds ``unique``'s key; then return that job."""
        from .exceptions import DuplicateJobError, NoSuchJobError

        self.backend.require("unique_keys")
        if not self._is_async:
            raise ValueError("unique=Unique(…) needs an asynchronous queue (is_async=True)")
        record.unique_key = unique.key
        # Sealed again: the MAC covers the unique key, set after _record sealed it.
        record.payload = seal(record, unseal(record.payload))
        for _ in range(10):
            try:
                stored = self.backend.enqueue_unique([record], unique.condition(
                    self.backend.clock.now()))
            except DuplicateJobError as exc:
                existing = self.backend.fetch_job(exc.job_id) if exc.job_id else None
                if existing is not None:
                    return Job(self.backend, existing)
                continue  # it ended and expired meanwhile: look again
            job = Job(self.backend, stored[0])
            _events.enqueued([job])
            return job
        raise NoSuchJobError(f"the job holding unique key {unique.key!r} kept disappearing")

    def enqueue(self, f: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
        """Enqueue ``f(*args, **kwargs)``; RQ's reserved keyword arguments are honoured.

        Raises:
            InvalidTaskError: ``f`` cannot be imported by a worker.
            SerializationError: an argument cannot be serialized.
            DuplicateJobError: ``unique=True`` and the id is queued or running.
            ValueError: a bad ``job_id``, timeout, TTL or priority.
            NotSupportedError: ``priority`` or ``unique=Unique(…)`` on a backend
                without them (a third-party backend; every bundled one has both).

        ``priority=N`` (plugq's): higher is taken first within this queue,
        first in first out among equals, default 0. ``unique=Unique(key, …)``
        (plugq's) returns the job already holding the key instead of storing
        another (see :class:`plugq.Unique`).
        """
        data, unique, pipeline = self._split(f, args, kwargs)
        record = self._record(data)
        return self._store([record], unique=unique, pipeline=pipeline)[0]

    def enqueue_call(
        self,
        func: Callable[..., Any] | str,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        timeout: Any = None,
        **options: Any,
    ) -> Job:
        """RQ's explicit form: ``enqueue_call(func, args=…, kwargs=…, timeout=…)``."""
        option = options.pop("unique", False)
        unique: bool | Unique = option if isinstance(option, Unique) else bool(option)
        pipeline = options.pop("pipeline", None)
        if "job_timeout" in options:
            timeout = options.pop("job_timeout")
        data = self.prepare_data(func, args, kwargs, timeout=timeout, **options)
        record = self._record(data)
        return self._store([record], unique=unique, pipeline=pipeline)[0]

    def enqueue_many(
        self, job_datas: Sequence[EnqueueData], pipeline: Pipeline | None = None,
        group_id: str | None = None,
    ) -> list[Job]:
        """Enqueue a batch atomically: every job is stored, or none is.

        With ``pipeline`` (from ``queue.connection.pipeline()``) the jobs are
        stored by ``pipeline.execute()``, together with the pipeline's others.
        """
        # The signing key is read once for the batch, not once per job.
        key = (secret_key() or b"") if job_datas else b""
        records = [self._record(d, group_id=group_id, key=key) for d in job_datas]
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise ValueError("enqueue_many: two jobs in the batch share a job_id")
        if not self._is_async:
            return [self._store([r], unique=False)[0] for r in records]
        return self._store(records, unique=False, pipeline=pipeline)

    def enqueue_job(self, job: Job, pipeline: Pipeline | None = None, at_front: bool = False) -> Job:
        """Store a job made with :meth:`Job.create` on this queue (rq's ``Queue.enqueue_job``)."""
        rec = job.record.copy()
        if job.connection is not self.backend:
            raise ValueError(f"job {job.id} was created for another backend than {self!r}")
        if rec.origin != self.name:
            # The signature covers the queue: sealed again for this one.
            rec.origin = self.name
            rec.payload = seal(rec, unseal(rec.payload))
        rec.at_front = at_front or rec.at_front
        rec.created_at = rec.created_at or self.backend.clock.now()
        stored = self._store([rec], unique=False, pipeline=pipeline)[0]
        job._record = stored.record
        return job

    def get_job_position(self, job_or_id: Job | str) -> int | None:
        """The job's 0-based place in this queue, or None if it is not queued here."""
        job_id = job_or_id.id if isinstance(job_or_id, Job) else job_or_id
        try:
            return self.get_job_ids().index(job_id)
        except ValueError:
            return None

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


def _stored_timeout(timeout: float | None) -> float | None:
    """A job's timeout as stored: the default for none given, None (no limit) for -1."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    return None if timeout == -1 else timeout


#: The options of an :class:`EnqueueData` (its fields after func, args and kwargs), all left out.
_NO_OPTIONS = Queue.prepare_data(None)[3:]

register_queue_class(Queue)
