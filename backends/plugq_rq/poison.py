"""Poison job and worker hashes on Redis: find the corrupt field before rq trips on it.

rq's ``Job.restore`` and ``Worker.refresh`` parse every field of a hash with
``int()``, ``json.loads`` and date parsing, so one malformed field written by
whoever can reach Redis would raise inside a dequeue (rq's, and plugq's reads
of rq's layout alike). :func:`job_field_problems` runs the same parses first,
one table entry per field rq or plugq reads, and names the fields that
would fail; :func:`plugq_rq.layout.from_hash` then reads the job as its
quarantined stand-in (failed, naming the field), so the worker fails it unrun
and takes the next one.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from plugq.ratelimit import RateLimit

Parse = Callable[[bytes], object]

# rq's own parses (rq.utils, rq.job) are imported on first use, for a value the
# fast checks here cannot vouch for (a corrupt or unusual one): importing rq
# loads all of it (its worker, queue, registries), several MB of RSS in every
# plugq worker, which otherwise never calls rq.


def _rq_utils() -> Any:
    import rq.utils

    return rq.utils


def _date(raw: bytes) -> object:
    return _rq_utils().str_to_date(raw)


def _worker_date(raw: bytes) -> object:
    return _rq_utils().utcparse(raw.decode("utf-8"))


#: rq's JobStatus values (rq.job.JobStatus), checked without importing rq.
_RQ_STATUSES = frozenset(
    {b"created", b"queued", b"finished", b"failed", b"started", b"deferred", b"scheduled",
     b"stopped", b"canceled"}
)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8")


def _name(raw: bytes) -> str:
    text = raw.decode("utf-8")
    if not text.isprintable() or " " in text:
        raise ValueError("holds control characters or spaces")
    return text


def _int(raw: bytes) -> int:
    return int(raw)


@functools.lru_cache(maxsize=256)
def _rate_limit(raw: bytes) -> RateLimit:
    # Checked before the claim script's admission meets it (a text that is not
    # a RateLimit is claimed unadmitted, then quarantined here); cached: a
    # store holds a handful of distinct limits, read at every limited claim.
    return RateLimit.loads(raw.decode("utf-8"))


def _flag(raw: bytes) -> bool:
    return bool(int(raw))


def _numbers(raw: bytes) -> list[float]:
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        for v in value
    ):
        raise ValueError("is not a list of seconds >= 0")
    return value


def _ids(raw: bytes) -> list[str]:
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("is not a list of job ids")
    return value


def _json_list(raw: bytes) -> list[Any]:
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, list):
        raise ValueError("is not a JSON list")
    return value


def _timeout(raw: bytes) -> object:
    try:
        value: object = int(raw)  # rq's parse_timeout tries int() first
    except ValueError:
        value = _rq_utils().parse_timeout(raw.decode("utf-8"))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("is not finite")
    return value


def _status(raw: bytes) -> object:
    if raw in _RQ_STATUSES:
        return raw
    if raw == b"rate_limited":
        # plugq's RateLimit status (rq 2.x has none; its unreleased one names it so)
        return raw
    from rq.job import JobStatus  # lazily: see _rq_utils

    return JobStatus(raw.decode("utf-8"))


def _exc_info(raw: bytes) -> str:
    try:
        return zlib.decompress(raw).decode("utf-8")
    except zlib.error:
        return raw.decode("utf-8")


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii")


#: Every job-hash field rq or plugq parses, with the parse rq (or plugq) applies.
JOB_FIELDS: dict[str, Parse] = {
    "created_at": _date,
    "enqueued_at": _date,
    "started_at": _date,
    "ended_at": _date,
    "last_heartbeat": _date,
    "origin": _text,
    "worker_name": _text,
    "description": _text,
    "group_id": _text,
    "timeout": _timeout,
    "result_ttl": _int,
    "failure_ttl": _int,
    "ttl": _int,
    "status": _status,
    "success_callback_name": _name,
    "failure_callback_name": _name,
    "stopped_callback_name": _name,
    "success_callback_timeout": _int,
    "failure_callback_timeout": _int,
    "stopped_callback_timeout": _int,
    "webhooks": _json_list,
    "dependency_ids": _ids,
    "dependency_id": _text,
    "allow_dependency_failures": _flag,
    "enqueue_at_front": _flag,
    "enqueue_at_front_on_retry": _flag,
    "number_of_retries": _int,
    "retries_left": _int,
    "retry_intervals": _numbers,
    "repeats_left": _int,
    "repeat_intervals": _numbers,
    "exc_info": _exc_info,
    "plugq_retry_intervals": _numbers,
    "plugq_attempts": _int,
    "plugq_priority": _int,
    "plugq_rate_limit": _rate_limit,
    # "v3:<hex>" (or a pre-v3 bare hex): ASCII, which hmac.compare_digest needs of a str;
    # its value is checked by plugq_rq.signing.refusal (a wrong one: "bad signature").
    "plugq_sig": _ascii,
}

_DATE_FIELDS = frozenset({"created_at", "enqueued_at", "started_at", "ended_at", "last_heartbeat",
                          "birth"})

#: The worker-hash fields rq's ``Worker.refresh`` parses.
WORKER_FIELDS: dict[str, Parse] = {
    "pid": _int,
    "last_heartbeat": _worker_date,
    "birth": _worker_date,
    "failed_job_count": _int,
    "successful_job_count": _int,
    "total_working_time": lambda raw: float(raw),
    "current_job_working_time": lambda raw: float(raw),
    "hostname": _text,
    "state": _text,
    "current_job": _text,
    "queues": _text,
    "ip_address": _text,
    "version": _text,
    "python_version": _text,
}


def _value(raw: dict[Any, Any], field: str) -> bytes | None:
    value = raw.get(field.encode(), raw.get(field))
    if isinstance(value, str):
        return value.encode()
    return value


#: rq's date text (``utcformat``, or the older form without microseconds).
_RQ_DATE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z\Z")


def _fast_ok(field: str, value: bytes) -> bool:
    """True when ``value`` surely parses as rq parses ``field`` (skips rq's slow strptime)."""
    if field in _DATE_FIELDS and _RQ_DATE.match(value):
        try:
            datetime.fromisoformat(value.decode())
            return True
        except ValueError:
            return False
    return False


def field_problems(raw: dict[Any, Any], table: dict[str, Parse]) -> dict[str, str]:
    """``{field: why}`` for each field of ``raw`` that its parse in ``table`` refuses."""
    bad: dict[str, str] = {}
    for key, value in raw.items():
        field = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
        parse = table.get(field)
        if parse is None or not value:
            continue  # not parsed by rq, or a missing/empty field rq treats as unset
        if isinstance(value, str):
            value = value.encode()
        if _fast_ok(field, value):
            continue
        try:
            parse(value)
        except Exception as exc:
            bad[field] = f"{value!r:.40} cannot be read ({type(exc).__name__}: {exc})"
    if len(bad) > 1:
        bad = {f: bad[f] for f in table if f in bad}  # reported in the table's order
    return bad


def job_field_problems(raw: dict[Any, Any]) -> dict[str, str]:
    """The corrupt fields of a job hash (an empty ``data`` is one: nothing to verify)."""
    bad = {}
    data = _value(raw, "data")
    try:
        plain = zlib.decompress(data) if data else b""
    except zlib.error:
        plain = data or b""
    if not plain:
        # rq would skip to its defaults and still deserialize meta and result.
        bad["data"] = "is empty or missing (nothing to verify or run)"
    bad.update(field_problems(raw, JOB_FIELDS))
    return bad


def describe(problems: dict[str, str]) -> str:
    field, why = next(iter(problems.items()))
    more = f" (and {len(problems) - 1} more field(s))" if len(problems) > 1 else ""
    return f"field {field!r} {why}{more}"
