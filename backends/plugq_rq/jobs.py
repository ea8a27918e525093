"""``PlugqJob``: rq's Job with the few behaviours plugq defines differently.

Everything is stored by rq itself, in rq's format; this subclass only

* picks the serializer per job from the stored data (pickle or JSON), so one
  worker runs jobs enqueued with either;
* makes ``plugq.get_current_job()`` work inside the task;
* refuses a return value the job's serializer cannot store (the job fails, as
  on every plugq backend, instead of storing a placeholder string);
* schedules retries never earlier than asked (rq rounds the due time down to
  the second) and keeps the failed attempt's traceback while it waits;
* logs a failing callback instead of letting it change the job's outcome;
* applies plugq's security guards before anything stored is deserialized
  (allow-list, json-only policy, HMAC signing; see :mod:`plugq_rq.signing`).

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

from rq.job import UNEVALUATED
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty, TimerDeathPenalty, UnixSignalDeathPenalty
from rq.utils import import_attribute

from plugq._context import _current
from plugq.config import current_settings
from plugq.exceptions import SerializationError
from plugq.security import UntrustedJobError, resolve_allowed, secret_key

from .poison import describe, job_field_problems
from .signing import (
    BOUND_FIELDS,
    CALLBACK_FIELDS,
    SIG_FIELD,
    RefusingSerializer,
    SignedSerializer,
    is_signed,
    job_mac,
    peek_func_name,
    refusal,
    serializer_for,
    sniff,
)

if TYPE_CHECKING:
    from rq.queue import Queue as RQQueue

log = logging.getLogger("plugq.rq")

#: Extra hash fields plugq keeps beside rq's own (rq preserves unknown fields).
RETRY_INTERVALS_FIELD = "plugq_retry_intervals"
ATTEMPTS_FIELD = "plugq_attempts"


def rq_serializer(name: str, *, signed: bool | None = None) -> Any:
    """rq's serializer for a plugq serializer name.

    ``signed`` defaults to "is ``PLUGQ_SECRET_KEY`` set in this process": new
    jobs are signed whenever a key is configured.
    """
    if signed is None:
        signed = secret_key() is not None
    return serializer_for(name, signed=signed)


def serializer_name(data: bytes) -> str:
    """Which serializer wrote rq's (possibly zlib-compressed) job ``data``."""
    return sniff(data)[0]


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


#: rq serializers plugq builds itself (``serializer_for``): known to have dumps/loads.
_KNOWN_SERIALIZERS: tuple[Any, ...] = (
    serializer_for("pickle", signed=False), serializer_for("json", signed=False),
    serializer_for("pickle", signed=True), serializer_for("json", signed=True),
)


class PlugqJob(RQJob):
    """rq's Job, serializer-aware per job; see the module docstring."""

    #: Set by the worker running the job: what get_current_job() returns inside it.
    plugq_current: Any = None
    #: The original Retry(interval=…) list, as the user gave it.
    plugq_retry_intervals: list[float] | None = None
    #: The traceback of the attempt being retried (kept on the job while it waits).
    plugq_exc_string: str | None = None
    #: Why this process refuses to deserialize or run the stored job (None: trusted).
    plugq_refusal: str | None = None
    #: The function name of a refused job, read without deserializing its data.
    plugq_refused_func: str | None = None

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        # rq refuses '.' in ids; plugq allows it, so the id is set without rq's check.
        known = serializer is not None and any(serializer is s for s in _KNOWN_SERIALIZERS)
        super().__init__(None, connection=connection, serializer=None if known else serializer)
        if known:
            # rq's resolve_serializer checks a runtime Protocol with isinstance
            # (~25 us per job on Python 3.11); plugq's own serializers need no check.
            self.serializer = serializer
        self._id = id

    def restore(self, raw_data: Any) -> Any:
        self.plugq_refusal = self.plugq_refused_func = None
        problems = job_field_problems(raw_data or {})
        if problems:
            self._plugq_restore_corrupt(raw_data or {}, problems)
            return None
        data = raw_data.get(b"data", raw_data.get("data"))
        try:
            plain = zlib.decompress(data)
        except zlib.error:
            plain = data
        # Every guard runs here, before rq deserializes data, meta or result.
        reason, func = refusal(str(self._id), raw_data, plain)
        if reason is not None:
            self.serializer = RefusingSerializer(reason)
        else:
            name, signed = sniff(plain)
            self.serializer = serializer_for(name, signed=signed)
        try:
            super().restore(raw_data)
        except Exception as exc:
            # A parse the field table does not know of: still one poison job, not a dead worker.
            self._plugq_restore_corrupt(raw_data, {"?": f"cannot be read ({type(exc).__name__}: {exc})"})
            return None
        if reason is not None:
            self.plugq_refusal = reason
            self.plugq_refused_func = func or peek_func_name(*_inner_and_name(self.data))
            # rq kept what it could not load; nothing of a refused job is used.
            self.meta, self._result, self.webhooks = {}, None, []
        raw = raw_data.get(RETRY_INTERVALS_FIELD.encode(), raw_data.get(RETRY_INTERVALS_FIELD))
        self.plugq_retry_intervals = json.loads(raw) if raw else None
        return None

    def _plugq_restore_corrupt(self, raw_data: Any, problems: dict[str, str]) -> None:
        """Restore a hash with unreadable fields as a refused job: failed unrun by the worker."""
        reason = (f"job {self._id}: the stored record is corrupt ({describe(problems)}); "
                  "quarantined as failed, nothing of it was run or deserialized")
        self.serializer = RefusingSerializer(reason)
        clean = {k: v for k, v in raw_data.items()
                 if (k.decode("utf-8", "replace") if isinstance(k, bytes) else k) not in problems}
        clean.setdefault(b"data", b"")
        try:
            super().restore(clean)
        except Exception:
            log.debug("Job %s: corrupt hash only partly restored", self._id, exc_info=True)
        self.plugq_refusal = reason
        self.plugq_refused_func = None
        self.meta, self._result, self.webhooks = {}, None, []
        self.plugq_retry_intervals = None

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict:
        if self.plugq_refusal is not None:
            # A refused job is stored as found (its data untouched) and never re-signed.
            return super().to_dict(include_meta=False, include_result=False)
        obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        if self.plugq_retry_intervals is not None:
            obj[RETRY_INTERVALS_FIELD] = json.dumps(self.plugq_retry_intervals)
        # An unsigned job needs no key (reading it costs environment lookups).
        key = secret_key() if isinstance(self.serializer, SignedSerializer) else None
        if key and is_signed(self.data):
            callbacks = tuple(_as_text(obj.get(f)) for f in CALLBACK_FIELDS)
            bound = tuple(_as_text(obj.get(f)) for f in BOUND_FIELDS)
            obj[SIG_FIELD] = job_mac(key, str(self._id), self.data, callbacks, bound)  # type: ignore[arg-type]
        return obj

    # -- what rq imports and calls: the allow-list by module (plugq.security.resolve_allowed) --

    @property
    def func(self) -> Any:
        allowed = current_settings().allowed_modules
        if allowed is None:
            return super().func
        if self.func_name is None:
            return None
        if self.instance is not None:
            raise UntrustedJobError(
                f"job {self.id}: a method of a stored instance is not run under "
                f"allowed_modules {allowed!r} (the instance is not a module's function)"
            )
        return resolve_allowed(self.func_name, allowed)

    def _plugq_callback(self, attr: str, name: str | None) -> Any:
        if getattr(self, attr) is UNEVALUATED and name:
            allowed = current_settings().allowed_modules
            setattr(self, attr, resolve_allowed(name, allowed) if allowed is not None
                    else import_attribute(name))
        value = getattr(self, attr)
        return None if value is UNEVALUATED else value

    @property
    def success_callback(self) -> Any:
        return self._plugq_callback("_success_callback", self._success_callback_name)

    @property
    def failure_callback(self) -> Any:
        return self._plugq_callback("_failure_callback", self._failure_callback_name)

    @property
    def stopped_callback(self) -> Any:
        return self._plugq_callback("_stopped_callback", self._stopped_callback_name)

    @property
    def serializer_name(self) -> str:
        if isinstance(self.serializer, SignedSerializer):
            return self.serializer.name
        if isinstance(self.serializer, RefusingSerializer):
            return _inner_and_name(self.data)[1]
        return "json" if self.serializer is JSONSerializer else "pickle"

    def perform(self) -> Any:
        token = None if self.plugq_current is None else _current.set(self.plugq_current)
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
        if self.plugq_refusal is not None:
            return
        try:
            super().execute_success_callback(_penalty(), result)
        except Exception:
            log.exception("Job %s: on_success callback failed; the job stays finished", self.id)

    def execute_failure_callback(self, death_penalty_class: Any, *exc_info: Any) -> None:
        if self.plugq_refusal is not None:
            log.warning("Job %s: refused (%s); its on_failure callback is not called",
                        self.id, self.plugq_refusal)
            return
        try:
            super().execute_failure_callback(_penalty(), *exc_info)
        except Exception:
            log.exception("Job %s: on_failure callback failed", self.id)


def _as_text(value: Any) -> str:
    # As Redis will hold it: redis-py writes str(number), bytes as they are.
    if value is None:
        return ""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _inner_and_name(data: bytes) -> tuple[bytes, str]:
    from .signing import inner_bytes

    inner = inner_bytes(data)
    return inner, ("json" if inner[:1] in (b"[", b"{") else "pickle")


def _penalty() -> type[BaseDeathPenalty]:
    return death_penalty_class()
