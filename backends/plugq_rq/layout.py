"""A :class:`~plugq.storage.JobRecord` as rq 2.x keeps a job, and back.

The job hash holds rq's field names and encodings, so rq's worker, CLI and
dashboard read plugq's jobs and plugq reads rq's:

* ``data`` is ``zlib(serializer((func_name, None, args, kwargs)))`` — rq's
  payload (under 512 bytes without the zlib, see :func:`_stored_plain`) —
  made from the record's ``payload`` (its serialized ``(args, kwargs)``).
  With ``PLUGQ_SECRET_KEY`` the inner bytes are signed as
  :class:`plugq_rq.signing.SignedSerializer` writes them and ``plugq_sig``
  binds the job's other fields (see :mod:`plugq_rq.signing`); a record read
  back is re-sealed in plugq's own format (:func:`plugq.security.seal`) only
  after that signature verified, so the engine's checks apply unchanged.
* dates are rq's ``utcformat`` text; ``timeout`` is whole seconds (-1: none);
  ``meta`` is the serializer's bytes; results and errors live in rq's
  ``rq:results:<id>`` stream (base64 as rq writes them).
* plugq-only fields: ``plugq_attempts``, ``plugq_expires_at``,
  ``plugq_scheduled_for``, ``plugq_retry_intervals``, ``plugq_timeout`` (a
  fractional timeout), issue 16's ``plugq_priority``, ``plugq_unique_key``,
  ``plugq_rate_limit``, ``plugq_pipe`` (only when set), ``plugq_progress``
  (written apart, by ``set_progress``), and for a payload that is not ``(args, kwargs)`` in its
  serializer, ``plugq_opaque`` with ``plugq_func``/``plugq_serializer`` (the
  bytes are then kept as they are).

Nothing here touches rq's classes: rq is the format, not a library called.
"""

from __future__ import annotations

import json
import math
import zlib
from base64 import b64decode, b64encode
from datetime import UTC, datetime
from typing import Any

from plugq._quarantine import quarantined
from plugq.security import seal, seal_blob, strip_blob, unseal
from plugq.serializers import SERIALIZERS, get_serializer
from plugq.storage import (
    DEFAULT_FAILURE_TTL,
    DEFAULT_RESULT_TTL,
    DEFAULT_TIMEOUT,
    JobRecord,
    JobStatus,
)

from .poison import describe, job_field_problems
from .signing import (
    CALLBACK_FIELDS,
    SIG_FIELD,
    bound_values,
    inner_bytes,
    is_signed,
    job_mac,
    refusal,
    sign_blob,
    verified_inner,
)

Hash = dict[bytes, bytes]

#: rq's Result.Type values in the results stream.
SUCCESSFUL, FAILED = "1", "2"

#: Payloads (rq's ``data``) from this size on are stored zlib-compressed, as rq stores
#: every one; smaller ones as they are (see to_fields).
COMPRESS_FROM = 512

_STATUS = {s.value.encode(): s for s in JobStatus}
_STATUS_TEXT = {s: s.value for s in JobStatus}
_STATUS[b"created"] = JobStatus.QUEUED


#: The last whole second :func:`fmt_time` formatted, and its text up to the seconds.
_second: tuple[float, str] = (-1.0, "")
#: The last time :func:`fmt_time` was given, and its text.
_last: tuple[float, str] = (-1.0, "")


def fmt_time(ts: float) -> str:
    """Epoch seconds as rq's ``utcformat`` text (microseconds, ``Z``).

    The same text as rq's ``strftime("%Y-%m-%dT%H:%M:%S.%fZ")`` and as
    ``datetime.fromtimestamp(ts, UTC).isoformat()``, whose rounding it repeats
    (the fraction times 10**6, rounded half to even, carried into the second
    at 10**6). The text up to the seconds is made once per second, not once
    per date written: a third of the cost for the dates of a batch, made
    within a second or two.
    """
    global _second, _last
    last_ts, last_text = _last
    if ts == last_ts:
        return last_text  # every job of a batch has the same enqueued_at
    if not 0 <= ts < 253402300799:  # datetime's own path for what the shortcut does not cover
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1000000:
        micros -= 1000000
        whole += 1.0
    last, text = _second
    if whole != last:
        text = datetime.fromtimestamp(whole, UTC).isoformat()[:19]
        _second = (whole, text)
    _last = (ts, "%s.%06dZ" % (text, micros))  # noqa: UP031 - a third cheaper than the f-string
    return _last[1]


def parse_time(raw: bytes | None) -> float | None:
    """rq's date text (``…Z``, with or without microseconds) as epoch seconds; None if empty."""
    if not raw:
        return None
    return datetime.fromisoformat(raw.decode()).replace(tzinfo=UTC).timestamp()


def _num(value: float) -> str:
    return repr(float(value))


# -- blobs (meta, results) -----------------------------------------------------------


def blob_to_rq(blob: bytes, key: bytes | None) -> bytes:
    """plugq's (possibly sealed) meta/result bytes in rq's form (signed as rq's serializer)."""
    inner = strip_blob(blob)
    return sign_blob(key, inner) if key else inner


def blob_from_rq(job_id: str, kind: str, blob: bytes, key: bytes | None) -> bytes:
    """rq's meta/result bytes as plugq's: sealed for this job only if rq's signature verified.

    A blob that does not verify is handed back without a seal, so the
    engine's reader (:func:`plugq.security.load_stored`) refuses it unread.
    """
    if not key:
        return inner_bytes(blob)
    inner = verified_inner(key, blob)
    if inner is None:
        return inner_bytes(blob)
    return seal_blob(job_id, kind, inner, key)


# -- record -> hash ---------------------------------------------------------------------


def _stored_plain(plain: bytes) -> bool:
    """Whether ``plain`` is stored as it is rather than zlib-compressed (rq compresses all).

    rq's reader (``Job.restore``) and plugq's take data that does not decompress
    as it is; a small payload gains little from compression and costs its time.
    Only when it cannot be read as zlib's: a zlib stream's first byte always
    has 8 in its low four bits (pickle's 0x80, JSON's ``[`` and a signed blob's
    ``P`` do not).
    """
    return 0 < len(plain) < COMPRESS_FROM and (plain[0] & 0x0F) != 8


def rq_inner(rec: JobRecord, data: bytes | None = None) -> bytes | None:
    """rq's inner payload bytes for ``rec`` (unsigned), or None if the payload is opaque.

    ``data``: the record's serialized arguments (``unseal(rec.payload)``) when the caller has them.
    """
    ser = SERIALIZERS.get(rec.serializer) or get_serializer(rec.serializer)  # the dict: once per job
    try:
        args, kwargs = ser.loads(unseal(rec.payload) if data is None else data)
        if not isinstance(kwargs, dict):
            raise TypeError("kwargs")
        args = list(args) if rec.serializer == "json" else tuple(args)
        return ser.dumps((rec.func_name, None, args, kwargs))
    except Exception:
        return None


def make_plain(rec: JobRecord, key: bytes | None, data: bytes | None = None) -> tuple[bytes, bool]:
    """``(plain, opaque)``: rq's uncompressed ``data`` for ``rec``, signed when a key is set."""
    inner = rq_inner(rec, data)
    if inner is None:
        return rec.payload, True
    return (sign_blob(key, inner) if key else inner), False


def shared_fields(rec: JobRecord) -> list[bytes | str]:
    """The fields of ``rec``'s hash the jobs of one batch have in common, as ``[field, value, …]``.

    Status, queue, timeout, result and failure TTLs and the enqueue time:
    :func:`to_fields` with ``shared=False`` leaves them out, for a batch that
    sends them once (see ``RedisStorage.insert``).
    """
    timeout = rec.timeout
    # The status text from a dict, not Enum's ``value`` property (a Python-level call).
    f: list[bytes | str] = [
        b"status", _STATUS_TEXT[rec.status],
        b"origin", rec.origin,
        b"timeout", "-1" if timeout is None else str(max(1, math.ceil(timeout))),
        b"result_ttl", str(rec.result_ttl),
        b"failure_ttl", str(rec.failure_ttl),
    ]
    if rec.enqueued_at is not None:
        f += (b"enqueued_at", fmt_time(rec.enqueued_at))
    return f


def to_fields(
    rec: JobRecord, key: bytes | None, made: tuple[bytes, bool] | None, *, with_meta: bool,
    data_stored: bool = False, shared: bool = True,
) -> list[bytes | str]:
    """The job hash for ``rec`` as a flat ``[field, value, …]`` list.

    Field names are bytes and values text or bytes (numbers as the text Redis
    will hold), ready for the wire. ``made`` is :func:`make_plain`'s answer
    already known for this payload, or None. ``data_stored``: the hash already
    holds that data (a rewrite keeps it, see :func:`kept_fields`), so it is not
    sent again. ``shared=False``: without :func:`shared_fields`' fields.
    """
    data = unseal(rec.payload)
    keep = not data
    if keep:
        # A refused or corrupt job's stand-in record has no payload: the stored
        # data (and its signature) stay as found (see KEEP_WHEN_REFUSED).
        plain, opaque = b"", False
    else:
        plain, opaque = made if made is not None else make_plain(rec, key, data)
    timeout = rec.timeout
    # Built as a list, no dict to flatten.
    f: list[bytes | str] = [
        b"created_at", fmt_time(rec.created_at),
        b"description", rec.description,
    ]
    if shared:
        f += shared_fields(rec)
    if not keep and not data_stored:
        f += (b"data", plain if _stored_plain(plain) else zlib.compress(plain))
    if timeout is not None and timeout != math.ceil(timeout):
        f += (b"plugq_timeout", _num(timeout))
    if rec.started_at is not None:
        f += (b"started_at", fmt_time(rec.started_at))
    if rec.ended_at is not None:
        f += (b"ended_at", fmt_time(rec.ended_at))
    if rec.worker_name:
        f += (b"worker_name", rec.worker_name)
    if rec.ttl is not None:
        f += (b"ttl", str(rec.ttl))
    if with_meta and rec.meta:
        f += (b"meta", blob_to_rq(rec.meta, key))
    if rec.on_success:
        f += (b"success_callback_name", rec.on_success)
    if rec.on_failure:
        f += (b"failure_callback_name", rec.on_failure)
    if rec.retries_left is not None:
        f += (b"retries_left", str(rec.retries_left))
    if rec.retry_intervals or rec.retries_left is not None:
        exact = [float(v) for v in rec.retry_intervals]
        f += (b"plugq_retry_intervals", json.dumps(exact))
        # rq picks interval number (len - retries_left) and repeats the first;
        # plugq repeats the last. One entry per retry left makes rq pick plugq's.
        left = rec.retries_left or 0
        padded = [exact[min(i, len(exact) - 1)] if exact else 0 for i in range(left)]
        f += (b"retry_intervals", json.dumps(padded or [0]))
    if rec.depends_on:
        f += (b"dependency_ids", json.dumps(list(rec.depends_on)),
              b"allow_dependency_failures", "1" if rec.allow_dependency_failure else "0")
    elif rec.allow_dependency_failure:
        f += (b"allow_dependency_failures", "1")
    if rec.at_front:
        f += (b"enqueue_at_front", "1")
    if rec.attempts:
        f += (b"plugq_attempts", str(rec.attempts))
    if rec.expires_at is not None:
        f += (b"plugq_expires_at", _num(rec.expires_at))
    if rec.scheduled_for is not None:
        f += (b"plugq_scheduled_for", _num(rec.scheduled_for))
    # Issue 16's fields, only when set: a plain job's hash is as before.
    if rec.priority:
        f += (b"plugq_priority", str(int(rec.priority)))
    if rec.unique_key is not None:
        f += (b"plugq_unique_key", rec.unique_key)
    if rec.rate_limit is not None:
        f += (b"plugq_rate_limit", rec.rate_limit)
    if rec.pipe is not None:
        f += (b"plugq_pipe", rec.pipe)
    if keep or (opaque and data_stored):
        pass
    elif opaque:
        f += (b"plugq_opaque", "1", b"plugq_func", rec.func_name, b"plugq_serializer", rec.serializer)
    elif key:
        named = dict(zip(f[::2], f[1::2], strict=True))
        if not shared:
            every = shared_fields(rec)
            named.update(zip(every[::2], every[1::2], strict=True))
        callbacks = tuple(_text(named.get(name.encode())) for name in CALLBACK_FIELDS)
        bound = bound_values(lambda name: None if (v := named.get(name.encode())) is None
                             else _text(v))
        f += (SIG_FIELD.encode(), job_mac(key, rec.id, plain, callbacks, bound))  # type: ignore[arg-type]
    return f


#: Fields a rewrite of a record without a payload keeps as stored.
KEEP_WHEN_REFUSED = ("data", SIG_FIELD, "plugq_opaque", "plugq_func", "plugq_serializer")


def kept_fields(rec: JobRecord, *, with_meta: bool, data_stored: bool = False) -> str:
    """The stored fields a rewrite of ``rec`` keeps (comma-separated, for the scripts)."""
    # A rewrite (put) keeps meta and the progress, which are written apart.
    names = [] if with_meta else ["meta", "plugq_progress"]
    if not unseal(rec.payload):
        names.extend(KEEP_WHEN_REFUSED)
    elif data_stored:
        names.extend(("data", "plugq_opaque", "plugq_func", "plugq_serializer"))
    return ",".join(names)


def round_time(ts: float) -> float:
    """``ts`` as its stored text (:func:`fmt_time`) reads back: whole microseconds.

    The microseconds :func:`fmt_time` writes, over 10**6 as an exact division
    of integers, which is what ``datetime.timestamp()`` computes from the text
    (:func:`parse_time`); ``round(ts, 6)`` costs twice as much (a decimal
    conversion).
    """
    if not 0 <= ts < 253402300799:
        return round(ts, 6)
    frac, whole = math.modf(ts)
    return (int(whole) * 1000000 + round(frac * 1e6)) / 1000000


#: The last ``enqueued_at`` :func:`round_times` rounded, and its rounding.
_enqueued: tuple[float, float] = (-1.0, -1.0)


def round_times(rec: JobRecord) -> None:
    """Round the record's dates to the microsecond, as rq's date text keeps them."""
    global _enqueued
    # Spelled out, not a loop over getattr/setattr: this runs for every job written.
    if rec.created_at:
        rec.created_at = round_time(rec.created_at)
    ts = rec.enqueued_at
    if ts:
        last, rounded = _enqueued
        if ts != last:  # the jobs of a batch are enqueued at one time
            rounded = round_time(ts)
            _enqueued = (ts, rounded)
        rec.enqueued_at = rounded
    if rec.started_at:
        rec.started_at = round_time(rec.started_at)
    if rec.ended_at:
        rec.ended_at = round_time(rec.ended_at)


def _text(value: Any) -> str:
    # As Redis will hold it: redis-py writes str(number), bytes as they are.
    if value is None:
        return ""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def result_fields(rec: JobRecord, key: bytes | None) -> tuple[str, str, str]:
    """``(type, return_value, exc_string)`` for the results stream ('' when absent)."""
    rv = "" if rec.result is None else b64encode(blob_to_rq(rec.result, key)).decode()
    exc = "" if not rec.exc_info else b64encode(zlib.compress(rec.exc_info.encode())).decode()
    kind = SUCCESSFUL if rec.status is JobStatus.FINISHED or (rec.result is not None and not exc) else FAILED
    return kind, rv, exc


# -- hash -> record ---------------------------------------------------------------------


def _s(h: Hash, name: bytes) -> str:
    value = h.get(name)
    return value.decode() if value else ""


def _float(h: Hash, name: bytes) -> float | None:
    value = h.get(name)
    return float(value) if value else None


def _int(h: Hash, name: bytes, default: int | None) -> int | None:
    value = h.get(name)
    return int(value) if value else default


def from_hash(
    job_id: str, h: Hash, entry: Hash, key: bytes | None, now: float,
    problems: dict[str, str] | None = None,
) -> tuple[JobRecord, tuple[bytes, bool] | None, str | None]:
    """The record for a stored job hash and its latest result entry.

    Returns ``(record, made, problem)``: ``made`` is ``(rq's uncompressed
    data, opaque?)`` the payload was made from (None when none was); ``problem``
    (comma-separated names of the corrupt fields)
    names the corrupt field(s) of a poison hash, whose record is then the
    quarantined stand-in (failed, unrunnable) of :func:`plugq._quarantine.quarantined`.
    """
    if problems is None:
        problems = job_field_problems(h)
    if problems:
        clean = {k: v for k, v in h.items() if k.decode("utf-8", "replace") not in problems}
        clean.pop(b"data", None)
        try:
            rec, _ = _build(job_id, clean, {}, key, data_ok=False)
        except Exception:
            rec = JobRecord(id=job_id, func_name="", origin="", payload=b"")
        problem = describe(problems)
        # status and origin are written as the stand-in has them (where it is
        # listed); every other corrupt field is kept as found by a rewrite.
        kept = ",".join(f for f in problems if f not in ("status", "origin"))
        return quarantined(rec, problem, now), None, kept
    rec, plain = _build(job_id, h, entry, key, data_ok=True)
    return rec, plain, None


def _build(
    job_id: str, h: Hash, entry: Hash, key: bytes | None, *, data_ok: bool
) -> tuple[JobRecord, tuple[bytes, bool] | None]:
    raw = h.get(b"data") or b""
    try:
        plain = zlib.decompress(raw)
    except zlib.error:
        plain = raw
    status = _STATUS.get(h.get(b"status") or b"queued", JobStatus.QUEUED)
    timeout_raw = h.get(b"plugq_timeout")
    if timeout_raw:
        timeout: float | None = float(timeout_raw)
    else:
        t = h.get(b"timeout")
        timeout = DEFAULT_TIMEOUT if not t else (None if int(t) == -1 else float(int(t)))
    intervals_raw = h.get(b"plugq_retry_intervals") or h.get(b"retry_intervals")
    deps_raw = h.get(b"dependency_ids")
    if deps_raw:
        depends_on = [str(d) for d in json.loads(deps_raw)]
    elif h.get(b"dependency_id"):
        depends_on = [_s(h, b"dependency_id")]
    else:
        depends_on = []
    rec = JobRecord(
        id=job_id,
        func_name=_s(h, b"plugq_func"),
        origin=_s(h, b"origin"),
        payload=b"",
        serializer=_s(h, b"plugq_serializer") or "pickle",
        status=status,
        description=_s(h, b"description"),
        created_at=parse_time(h.get(b"created_at")) or 0.0,
        enqueued_at=parse_time(h.get(b"enqueued_at")),
        started_at=parse_time(h.get(b"started_at")),
        ended_at=parse_time(h.get(b"ended_at")),
        timeout=timeout,
        result_ttl=_int(h, b"result_ttl", DEFAULT_RESULT_TTL),  # type: ignore[arg-type]
        failure_ttl=_int(h, b"failure_ttl", DEFAULT_FAILURE_TTL),  # type: ignore[arg-type]
        ttl=_int(h, b"ttl", None),
        worker_name=_s(h, b"worker_name") or None,
        retries_left=_int(h, b"retries_left", None),
        retry_intervals=[float(v) for v in json.loads(intervals_raw)] if intervals_raw else [],
        depends_on=depends_on,
        allow_dependency_failure=h.get(b"allow_dependency_failures") == b"1",
        on_success=_s(h, b"success_callback_name") or None,
        on_failure=_s(h, b"failure_callback_name") or None,
        scheduled_for=_float(h, b"plugq_scheduled_for"),
        expires_at=_float(h, b"plugq_expires_at"),
        at_front=h.get(b"enqueue_at_front") == b"1",
        attempts=_int(h, b"plugq_attempts", 0) or 0,
        priority=_int(h, b"plugq_priority", 0) or 0,
        unique_key=h[b"plugq_unique_key"].decode("utf-8", "replace") if b"plugq_unique_key" in h else None,
        rate_limit=h[b"plugq_rate_limit"].decode("utf-8", "replace") if b"plugq_rate_limit" in h else None,
        pipe=h[b"plugq_pipe"].decode("utf-8", "replace") if b"plugq_pipe" in h else None,
    )
    if rec.retries_left is None and not h.get(b"plugq_retry_intervals"):
        rec.retry_intervals = []
    meta = h.get(b"meta")
    exc_raw = entry.get(b"exc_string")
    if exc_raw:
        rec.exc_info = zlib.decompress(b64decode(exc_raw)).decode()
    elif h.get(b"exc_info"):
        try:
            rec.exc_info = zlib.decompress(h[b"exc_info"]).decode()
        except zlib.error:
            rec.exc_info = h[b"exc_info"].decode()
    if not data_ok:
        rec.meta = b""
        return rec, None
    if h.get(b"plugq_opaque"):
        rec.payload = plain
        rec.meta = meta or b""
        if b"return_value" in entry:
            rec.result = b64decode(entry[b"return_value"])
        return rec, (plain, True)
    inner = inner_bytes(plain)
    name = "json" if inner[:1] in (b"[", b"{") else "pickle"
    rec.serializer = name
    reason, func = refusal(job_id, h, plain)
    if reason is None and not key and is_signed(plain):
        # Signed by a producer with a key this process lacks: never deserialized
        # here; the engine refuses the (unverifiable) sealed stand-in.
        reason = "signed, and this process has no key"
    if reason is not None:
        # Refused before anything is deserialized: the engine's own checks
        # refuse the record again (unsigned, or sealed with no valid MAC).
        rec.func_name = func or ""
        rec.payload = b"" if "not signed" in reason else seal(rec, b"", b"\x00refused")
        return rec, None
    ser = get_serializer(name)
    try:
        func_name, _instance, args, kwargs = ser.loads(inner)
        rec.func_name = str(func_name)
        payload = ser.dumps((list(args) if name == "json" else tuple(args), dict(kwargs)))
    except Exception:
        # Data that does not deserialize to rq's shape: the job fails when run.
        rec.func_name = func or ""
        return rec, None
    rec.payload = seal(rec, payload, key) if key else payload
    if meta:
        rec.meta = blob_from_rq(job_id, "meta", meta, key)
    if b"return_value" in entry:
        rec.result = blob_from_rq(job_id, "result", b64decode(entry[b"return_value"]), key)
    elif status is JobStatus.FINISHED:
        rec.result = seal_blob(job_id, "result", ser.dumps(None), key) if key else ser.dumps(None)
    return rec, (plain, False)
