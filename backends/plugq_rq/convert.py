"""rq ``Job`` <-> plugq :class:`~plugq.storage.JobRecord`.

The record's ``payload``, ``meta`` and ``result`` are plugq-serializer bytes;
rq keeps its own (zlib-compressed) pickle or JSON in the job hash and the
results stream. Statuses map one to one (rq's ``created`` reads as queued).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from rq.job import Callback
from rq.job import JobStatus as RQStatus
from rq.results import Result

from plugq.retry import retry_interval
from plugq.security import strip_blob, unseal
from plugq.serializers import get_serializer
from plugq.storage import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL, JobRecord, JobStatus

from .jobs import ATTEMPTS_FIELD, PlugqJob, rq_serializer


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def status_of(job: PlugqJob) -> JobStatus:
    """plugq's status for an rq job (``created`` counts as queued)."""
    raw = job.get_status(refresh=False)
    if raw is None or raw == RQStatus.CREATED:
        return JobStatus.QUEUED
    return JobStatus(str(raw.value if isinstance(raw, RQStatus) else raw))


def to_rq_job(record: JobRecord, connection: Any, *, signed: bool | None = None) -> PlugqJob:
    """Build (not save) the rq job for a record plugq prepared.

    ``signed``: whether to write it signed (default: a secret key is set); a
    batch passes it once instead of reading the key per job.
    """
    ser = get_serializer(record.serializer)
    # The core seals the payload when PLUGQ_SECRET_KEY is set; on Redis the
    # signature is rq's (a signed serializer and the job's plugq_sig field).
    args, kwargs = ser.loads(unseal(record.payload))
    timeout: int | None = -1 if record.timeout is None else max(1, math.ceil(record.timeout))
    job: PlugqJob = PlugqJob.create(  # type: ignore[assignment]
        record.func_name,
        args=list(args) if record.serializer == "json" else tuple(args),
        kwargs=dict(kwargs),
        connection=connection,
        result_ttl=record.result_ttl,
        ttl=record.ttl,
        failure_ttl=record.failure_ttl,
        description=record.description,
        timeout=timeout,
        origin=record.origin,
        meta=ser.loads(strip_blob(record.meta)) if record.meta else None,
        serializer=rq_serializer(record.serializer, signed=signed),
        status=RQStatus(record.status.value),
        on_success=Callback(record.on_success) if record.on_success else None,
        on_failure=Callback(record.on_failure) if record.on_failure else None,
    )
    # plugq allows '.' in ids, rq's setter does not; rq never re-validates a stored id.
    job._id = record.id
    job.created_at = _dt(record.created_at) or job.created_at
    if record.depends_on:
        job._dependency_ids = list(record.depends_on)
        job.allow_dependency_failures = record.allow_dependency_failure
    job.enqueue_at_front = bool(record.at_front)
    if record.retries_left is not None:
        job.retries_left = record.retries_left
        job.plugq_retry_intervals = list(record.retry_intervals)
        # rq picks interval number (len - retries_left) and repeats the first;
        # plugq repeats the last. One entry per retry makes rq pick plugq's.
        padded: list[Any] = [
            retry_interval(record.retry_intervals, i) for i in range(record.retries_left)
        ]
        job.retry_intervals = padded or [0]
    return job


def latest_result(job: PlugqJob) -> Result | None:
    """rq's latest Result of ``job`` (one XREVRANGE)."""
    return Result.fetch_latest(job, serializer=job.serializer)


def _arguments(job: PlugqJob) -> tuple[Any, Any]:
    try:
        return job.args, job.kwargs
    except Exception:
        # Data that does not deserialize (or not to rq's shape) fails the job
        # when a worker runs it; a listing or a fetch shows it without arguments.
        return (), {}


def to_record(
    job: PlugqJob,
    result: Result | None = None,
    *,
    scheduled_for: float | None = None,
    attempts: int | None = None,
) -> JobRecord:
    """The plugq record for a fetched rq job; ``result`` is its latest rq Result."""
    name = job.serializer_name
    ser = get_serializer(name)
    status = status_of(job)
    refused = job.plugq_refusal is not None
    # A refused job's arguments are never deserialized: it reads as called with none.
    args, kwargs = ((), {}) if refused else _arguments(job)
    payload = ser.dumps((list(args) if name == "json" else tuple(args), dict(kwargs)))
    func_name = (job.plugq_refused_func if refused else job.func_name) or ""
    value: bytes | None = None
    exc: str | None = None
    if status is JobStatus.FINISHED:
        if result is not None and result.type == Result.Type.SUCCESSFUL:
            value = ser.dumps(result.return_value)
        else:
            value = ser.dumps(None)
    else:
        if result is not None and result.type in (Result.Type.FAILED, Result.Type.STOPPED):
            exc = result.exc_string
        if not exc:
            exc = job._exc_info or None
    timeout = job.timeout
    intervals = job.plugq_retry_intervals
    if intervals is None:
        intervals = [float(v) for v in (job.retry_intervals or [])]
    return JobRecord(
        id=job.id,
        func_name=func_name,
        origin=job.origin or "",
        payload=payload,
        serializer=name,
        status=status,
        description=job.description or "",
        created_at=_ts(job.created_at) or 0.0,
        enqueued_at=_ts(job.enqueued_at),
        started_at=_ts(job.started_at),
        ended_at=_ts(job.ended_at),
        timeout=None if timeout in (None, -1) else float(timeout),
        result_ttl=DEFAULT_RESULT_TTL if job.result_ttl is None else int(job.result_ttl),
        failure_ttl=DEFAULT_FAILURE_TTL if job.failure_ttl is None else int(job.failure_ttl),
        ttl=job.ttl,
        meta=ser.dumps(job.meta) if job.meta else b"",
        result=value,
        exc_info=exc,
        worker_name=job.worker_name or None,
        retries_left=job.retries_left,
        retry_intervals=[float(v) for v in intervals],
        depends_on=list(job._dependency_ids or []),
        allow_dependency_failure=bool(job.allow_dependency_failures),
        on_success=job._success_callback_name or None,
        on_failure=job._failure_callback_name or None,
        scheduled_for=scheduled_for,
        at_front=bool(job.enqueue_at_front),
        attempts=attempts or 0,
    )


def stored_record(record: JobRecord, job: PlugqJob) -> JobRecord:
    """What :func:`to_record` reads back for ``job`` just enqueued from ``record``.

    Built from the record the core passed in (not by deserializing the job's
    arguments again): only what rq set or rounded differs.
    """
    out = record.copy()
    out.payload = unseal(record.payload)
    out.status = status_of(job)
    out.description = job.description or ""
    out.created_at = _ts(job.created_at) or 0.0
    out.enqueued_at = _ts(job.enqueued_at)
    out.started_at = out.ended_at = None
    timeout = job.timeout
    out.timeout = None if timeout in (None, -1) else float(timeout)
    out.result = out.exc_info = out.worker_name = None
    retrying = record.retries_left is not None
    out.retry_intervals = [float(v) for v in record.retry_intervals] if retrying else []
    out.allow_dependency_failure = bool(record.allow_dependency_failure and record.depends_on)
    out.scheduled_for = record.scheduled_for if out.status is JobStatus.SCHEDULED else None
    out.expires_at = None
    out.at_front = bool(record.at_front)
    out.attempts = 0
    return out


def attempts_of(raw: dict[Any, Any]) -> int:
    """The attempt counter plugq's workers keep in the job hash (0 if absent)."""
    value = raw.get(ATTEMPTS_FIELD.encode(), raw.get(ATTEMPTS_FIELD))
    try:
        return int(value) if value else 0
    except ValueError:
        return 0  # a corrupt counter: the job itself is quarantined when restored
