"""Poison records: a stored job or worker the engine cannot act on.

Anyone who can write to the store can leave a record whose fields are not
what the engine expects: a status that is not a status, text where a time
belongs, broken JSON in a list. One such record must never stop a worker,
block the jobs behind it or change another job's outcome. Storages decode
leniently and ask :func:`job_problem` / :func:`worker_problem` which field,
if any, is unusable; a job with a problem is failed unrun with
:func:`quarantine_exc_info` as its reason (see :func:`quarantined`), a worker
row is shown with its problem as its state and treated as dead.

The checks are a table, one entry per :class:`~plugq.storage.JobRecord`
field, so a field added to the record without a check fails
``tests/test_poison.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .storage import JobRecord, JobStatus, WorkerRecord

#: The serializers a stored job may name (plugq's own; kept here rather than
#: importing plugq.serializers so this module stays at the bottom of the layers).
KNOWN_SERIALIZERS = frozenset({"pickle", "json"})

Check = Callable[[Any], "str | None"]


class Unparsable:
    """Stands for a stored value a storage could not even decode (broken JSON, say)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"<unparsable: {self.why}>"


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"is {type(value).__name__}, not text"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Storages decode text with surrogateescape so that invalid UTF-8
        # reaches this check instead of raising inside the driver.
        return "is not valid UTF-8"
    return None


def _name(value: Any) -> str | None:
    problem = _text(value)
    if problem is None and (not value or not value.isprintable()):
        return "is empty or holds control characters"
    return problem


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is {type(value).__name__} {value!r:.40}, not a number"
    if not math.isfinite(value):
        return f"is {value!r}, not a finite number"
    return None


def _integer(low: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"is {type(value).__name__} {value!r:.40}, not an integer"
        if value < low:
            return f"is {value}, below {low}"
        return None

    return check


def _positive(value: Any) -> str | None:
    problem = _number(value)
    if problem is None and value <= 0:
        return f"is {value!r}, not > 0"
    return problem


def _bytes(value: Any) -> str | None:
    return None if isinstance(value, bytes) else f"is {type(value).__name__}, not bytes"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"is {value!r:.40}, not a boolean"


def _list_of(check: Check) -> Check:
    def checked(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"is {type(value).__name__}, not a list"
        for i, item in enumerate(value):
            problem = check(item)
            if problem is not None:
                return f"item {i} {problem}"
        return None

    return checked


def _status(value: Any) -> str | None:
    return None if isinstance(value, JobStatus) else f"{value!r:.40} is not a job status"


def _serializer(value: Any) -> str | None:
    if value in KNOWN_SERIALIZERS:
        return None
    return f"{value!r:.40} is not a known serializer ({', '.join(sorted(KNOWN_SERIALIZERS))})"


def _non_negative(value: Any) -> str | None:
    problem = _number(value)
    if problem is None and value < 0:
        return f"is {value!r}, negative"
    return problem


#: One check per JobRecord field: None when the value is usable, else why not.
def _rate_limit(value: Any) -> str | None:
    from .ratelimit import RateLimit

    problem = _text(value)
    if problem is not None:
        return problem
    if value in _SOUND_RATE_LIMITS:
        return None
    try:
        RateLimit.loads(value)
    except (ValueError, TypeError):
        return f"is {value!r:.40}, not a RateLimit"
    if len(_SOUND_RATE_LIMITS) >= 1024:
        _SOUND_RATE_LIMITS.clear()
    _SOUND_RATE_LIMITS.add(value)
    return None


#: rate_limit texts :func:`_rate_limit` accepted: a store holds a handful of
#: distinct ones, and :func:`_plainly_sound` lets a record carrying one of
#: them take the fast path (a limited job is decoded at every claim).
#: Bounded: cleared when full.
_SOUND_RATE_LIMITS: set[str] = set()


def _pipe(value: Any) -> str | None:
    problem = _text(value)
    if problem is not None:
        return problem
    try:
        spec = json.loads(value)
    except ValueError:
        spec = None
    if isinstance(spec, dict) and (
        isinstance(spec.get("from"), str)
        or (isinstance(spec.get("group"), list) and all(isinstance(i, str) for i in spec["group"]))
    ):
        return None
    return f"is {value!r:.40}, not a workflow step's inputs"


JOB_CHECKS: dict[str, Check] = {
    "id": _name,
    "func_name": _name,
    "origin": _text,
    "payload": _bytes,
    "serializer": _serializer,
    "status": _status,
    "description": _text,
    "created_at": _number,
    "enqueued_at": _optional(_number),
    "started_at": _optional(_number),
    "ended_at": _optional(_number),
    "timeout": _optional(_positive),
    "result_ttl": _integer(-1),
    "failure_ttl": _integer(-1),
    "ttl": _optional(_integer(-1)),
    "meta": _bytes,
    "result": _optional(_bytes),
    "exc_info": _optional(_text),
    "worker_name": _optional(_text),
    "retries_left": _optional(_integer(0)),
    "retry_intervals": _list_of(_non_negative),
    "depends_on": _list_of(_name),
    "allow_dependency_failure": _flag,
    "on_success": _optional(_name),
    "on_failure": _optional(_name),
    "scheduled_for": _optional(_number),
    "expires_at": _optional(_number),
    "at_front": _flag,
    "attempts": _integer(0),
    "priority": _integer(-(2**31)),
    "unique_key": _optional(_text),
    "rate_limit": _optional(_rate_limit),
    "pipe": _optional(_pipe),
}

WORKER_CHECKS: dict[str, Check] = {
    "name": _name,
    "queues": _list_of(_name),
    "pid": _integer(0),
    "hostname": _text,
    "birth": _number,
    "last_heartbeat": _number,
    "state": _text,
    "current_job_id": _optional(_text),
    "successful_jobs": _integer(0),
    "failed_jobs": _integer(0),
}


_INF = float("inf")
_KNOWN = KNOWN_SERIALIZERS
_OPT_TEXT = (type(None), str)


#: Priorities fit a 32-bit integer column (PostgreSQL's ``integer``).
_PRIORITY_MAX = 2**31


def _plainly_sound(d: dict[str, Any]) -> bool:
    """True for a record of the usual shape; False means "ask the table".

    Checking the table costs ~8 us a record, run on every claim and read; this
    one expression (ASCII text, exact types, finite numbers via chained
    comparisons, which NaN fails) accepts the common record in ~2 us and never
    accepts one the table would refuse.
    """
    enq, sta, end, sch, exp = (d["enqueued_at"], d["started_at"], d["ended_at"],
                               d["scheduled_for"], d["expires_at"])
    timeout, ttl, retries = d["timeout"], d["ttl"], d["retries_left"]
    i, f, o = d["id"], d["func_name"], d["origin"]
    return (
        type(i) is str and i.isascii() and i.isprintable() and i != ""
        and type(f) is str and f.isascii() and f.isprintable() and f != ""
        and type(o) is str and o.isascii()
        and type(d["payload"]) is bytes and type(d["meta"]) is bytes
        and d["serializer"] in _KNOWN and type(d["status"]) is JobStatus
        and type(d["description"]) is str and d["description"].isascii()
        and type(d["created_at"]) in (float, int) and -_INF < d["created_at"] < _INF
        and (enq is None or (type(enq) in (float, int) and -_INF < enq < _INF))
        and (sta is None or (type(sta) in (float, int) and -_INF < sta < _INF))
        and (end is None or (type(end) in (float, int) and -_INF < end < _INF))
        and (sch is None or (type(sch) in (float, int) and -_INF < sch < _INF))
        and (exp is None or (type(exp) in (float, int) and -_INF < exp < _INF))
        and (timeout is None or (type(timeout) in (float, int) and 0 < timeout < _INF))
        and type(d["result_ttl"]) is int and d["result_ttl"] >= -1
        and type(d["failure_ttl"]) is int and d["failure_ttl"] >= -1
        and (ttl is None or (type(ttl) is int and ttl >= -1))
        and d["result"].__class__ in (type(None), bytes)
        and (d["exc_info"] is None or (type(d["exc_info"]) is str and d["exc_info"].isascii()))
        and (d["worker_name"] is None or (type(d["worker_name"]) is str
                                          and d["worker_name"].isascii()))
        and (retries is None or (type(retries) is int and retries >= 0))
        and d["retry_intervals"].__class__ is list and not d["retry_intervals"]
        and d["depends_on"].__class__ is list and not d["depends_on"]
        and type(d["allow_dependency_failure"]) is bool and type(d["at_front"]) is bool
        and d["on_success"] is None and d["on_failure"] is None
        and type(d["attempts"]) is int and d["attempts"] >= 0
        and type(d["priority"]) is int and -_PRIORITY_MAX <= d["priority"] < _PRIORITY_MAX
        and d["unique_key"] is None and d["pipe"] is None
        and (d["rate_limit"] is None or d["rate_limit"] in _SOUND_RATE_LIMITS)
    )


def job_problem(rec: JobRecord) -> str | None:
    """``"field 'X' …"`` for the first unusable field of ``rec``, or None."""
    values = rec.__dict__
    try:
        if _plainly_sound(values):
            return None
    except Exception:  # a missing or exotic attribute: the table says which
        pass
    for name, check in JOB_CHECKS.items():
        value = values.get(name)
        problem = value.why if isinstance(value, Unparsable) else check(value)
        if problem is not None:
            return f"field {name!r} {problem}"
    return None


def worker_problem(worker: WorkerRecord) -> str | None:
    """``"field 'X' …"`` for the first unusable field of ``worker``, or None."""
    values = worker.__dict__
    for name, check in WORKER_CHECKS.items():
        value = values.get(name)
        problem = value.why if isinstance(value, Unparsable) else check(value)
        if problem is not None:
            return f"field {name!r} {problem}"
    return None


def quarantine_exc_info(job_id: Any, problem: str) -> str:
    """The exc_info stored on a quarantined job: names the field, says nothing ran."""
    return (
        "Traceback (most recent call last):\n"
        f"plugq.exceptions.CorruptRecordError: job {job_id!r:.80}: the stored record is corrupt "
        f"({problem}); quarantined as failed, nothing of it was run or deserialized\n"
    )


def quarantined(rec: JobRecord, problem: str, now: float) -> JobRecord:
    """A usable stand-in for a corrupt record: failed, unrunnable, with the reason.

    Fields that failed their check are reset to safe defaults so that code
    listing or displaying the job does not trip over them; the storage keeps
    the original row for inspection.
    """
    job_id = rec.__dict__.get("id")
    default = JobRecord(id="", func_name="", origin="", payload=b"")
    for name, check in JOB_CHECKS.items():
        if check(rec.__dict__.get(name)) is not None:
            setattr(rec, name, getattr(default, name))
    # The id is kept whatever it holds: it is how the storage finds the row again.
    rec.id = job_id if isinstance(job_id, str) else str(job_id)
    rec.status = JobStatus.FAILED
    rec.exc_info = quarantine_exc_info(rec.id, problem)
    rec.ended_at = now
    rec.expires_at = None
    rec.retries_left = None
    rec.depends_on = []
    rec.on_success = rec.on_failure = None
    return rec


def quarantined_worker(worker: WorkerRecord, problem: str) -> WorkerRecord:
    """A corrupt worker row as a dead worker whose state names the problem."""
    original = worker.__dict__.get("name")
    defaults = WorkerRecord(name="", queues=[], pid=0, hostname="", birth=0.0, last_heartbeat=0.0)
    for name, check in WORKER_CHECKS.items():
        if check(worker.__dict__.get(name)) is not None:
            setattr(worker, name, getattr(defaults, name))
    # Kept as found: it is how the storage finds the row to reap it.
    worker.name = original if isinstance(original, str) else str(original)
    worker.state = f"corrupt ({problem})"
    # Never heartbeated as far as the engine can tell: reaped as dead.
    worker.last_heartbeat = 0.0
    return worker
