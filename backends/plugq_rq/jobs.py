"""``PlugqJob``: rq's Job with the few behaviours plugq defines differently.

Everything is stored by rq itself, in rq's format; this subclass only

* picks the serializer per job from the stored data (pickle or JSON), so one
  worker runs jobs enqueued with either;
* makes ``plugq.get_current_job()`` work inside the task;
* refuses a return value the job's serializer cannot store (the job fails, as
  on every plugq backend, instead of storing a placeholder string);
* schedules retries never earlier than asked (rq rounds the due time down to
  the second) and keeps the failed attempt's traceback while it waits;
* logs a failing callback instead of letting it change the job's outcome.

A plain ``rq worker`` runs the same jobs with rq's stock Job class; only the
points above then behave as rq's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any

from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.serializers import DefaultSerializer, JSONSerializer
from rq.timeouts import BaseDeathPenalty, TimerDeathPenalty, UnixSignalDeathPenalty

if TYPE_CHECKING:
    from rq.queue import Queue as RQQueue

    from .backend import RQBackend

log = logging.getLogger("plugq.rq")

#: Extra hash fields plugq keeps beside rq's own (rq preserves unknown fields).
RETRY_INTERVALS_FIELD = "plugq_retry_intervals"
ATTEMPTS_FIELD = "plugq_attempts"


def rq_serializer(name: str) -> Any:
    """rq's serializer class for a plugq serializer name."""
    return JSONSerializer if name == "json" else DefaultSerializer


def serializer_name(data: bytes) -> str:
    """Which serializer wrote rq's (possibly zlib-compressed) job ``data``."""
    try:
        raw = zlib.decompress(data)
    except zlib.error:
        raw = data
    return "json" if raw[:1] in (b"[", b"{") else "pickle"


def death_penalty_class() -> type[BaseDeathPenalty]:
    """SIGALRM in the main thread, a timer thread elsewhere (signals need the main thread)."""
    if threading.current_thread() is threading.main_thread() and hasattr(
        __import__("signal"), "SIGALRM"
    ):
        return UnixSignalDeathPenalty
    return TimerDeathPenalty


def schedule(queue: RQQueue, job: RQJob, when: float, pipeline: Any) -> None:
    """rq's ``Queue.schedule_job`` with the exact due time.

    rq's ``ScheduledJobRegistry.schedule`` rounds the time down to the second
    (a job could run up to a second early); the registry is a sorted set scored
    by epoch seconds, so the exact float score is what rq's scheduler reads.
    """
    from rq.registry import ScheduledJobRegistry

    pipeline.sadd(queue.redis_queues_keys, queue.key)
    queue._persist_job(job, pipeline, status=RQStatus.SCHEDULED)
    pipeline.zadd(ScheduledJobRegistry(queue=queue).key, {job.id: when})


class PlugqJob(RQJob):
    """rq's Job, serializer-aware per job; see the module docstring."""

    #: Set by the worker running the job, so get_current_job() can build a plugq Job.
    plugq_backend: RQBackend | None = None
    #: The original Retry(interval=…) list, as the user gave it.
    plugq_retry_intervals: list[float] | None = None
    #: The traceback of the attempt being retried (kept on the job while it waits).
    plugq_exc_string: str | None = None

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        # rq refuses '.' in ids; plugq allows it, so the id is set without rq's check.
        super().__init__(None, connection=connection, serializer=serializer)
        self._id = id

    def restore(self, raw_data: Any) -> Any:
        data = raw_data.get(b"data", raw_data.get("data")) if raw_data else None
        if data:
            self.serializer = rq_serializer(serializer_name(data))
        super().restore(raw_data)
        raw = raw_data.get(RETRY_INTERVALS_FIELD.encode(), raw_data.get(RETRY_INTERVALS_FIELD))
        self.plugq_retry_intervals = json.loads(raw) if raw else None
        return None

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict:
        obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        if self.plugq_retry_intervals is not None:
            obj[RETRY_INTERVALS_FIELD] = json.dumps(self.plugq_retry_intervals)
        return obj

    @property
    def serializer_name(self) -> str:
        return "json" if self.serializer is JSONSerializer else "pickle"

    def perform(self) -> Any:
        from plugq._context import _current
        from plugq.exceptions import SerializationError
        from plugq.job import Job

        token = None
        if self.plugq_backend is not None:
            from .convert import to_record

            token = _current.set(Job(self.plugq_backend, to_record(self)))
        try:
            value = super().perform()
        finally:
            if token is not None:
                _current.reset(token)
        try:
            self.serializer.dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"job {self.id} returned {value!r:.80}, which the {self.serializer_name} "
                f"serializer cannot store: {exc}"
            ) from exc
        return value

    def retry(self, queue: RQQueue, pipeline: Any) -> None:
        interval = self.get_retry_interval()
        assert self.retries_left
        self.retries_left -= 1
        if self.plugq_exc_string:
            self._exc_info = self.plugq_exc_string
        if interval:
            schedule(queue, self, time.time() + interval, pipeline)
            log.info("Job %s: scheduled for retry in %ss, %s left", self.id, interval, self.retries_left)
        else:
            queue._enqueue_job(self, pipeline=pipeline, at_front=self.enqueue_at_front_on_retry)
            log.info("Job %s: enqueued for retry, %s left", self.id, self.retries_left)

    def execute_success_callback(self, death_penalty_class: Any, result: Any) -> None:
        try:
            super().execute_success_callback(_penalty(), result)
        except Exception:
            log.exception("Job %s: on_success callback failed; the job stays finished", self.id)

    def execute_failure_callback(self, death_penalty_class: Any, *exc_info: Any) -> None:
        try:
            super().execute_failure_callback(_penalty(), *exc_info)
        except Exception:
            log.exception("Job %s: on_failure callback failed", self.id)


def _penalty() -> type[BaseDeathPenalty]:
    return death_penalty_class()
