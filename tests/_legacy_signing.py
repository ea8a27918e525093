"""Job signatures as plugq wrote them before v3 (which did not bind priority,
unique_key and rate_limit), for tests that a job stored then still runs.

Copied from the pre-v3 code (``plugq.security._bound_fields``/``_mac``/``seal``
and ``plugq_rq.signing.bound_values``/``job_mac``), not imported from the
current modules: the tests must check the current readers against what the
old writers produced, not against the current code's idea of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from typing import Any

from plugq.storage import JobRecord

V2_MAGIC = b"PQS1"
MAC_LEN = 32


def _v2_fields(rec: JobRecord) -> tuple[str, ...]:
    fields = (
        "plugq-job-v2", rec.id, rec.origin, rec.func_name, rec.serializer,
        rec.on_success or "", rec.on_failure or "",
        json.dumps(list(rec.depends_on)), "1" if rec.allow_dependency_failure else "0",
        json.dumps([float(v) for v in rec.retry_intervals]),
    )
    return fields if rec.pipe is None else (*fields, "pipe", rec.pipe)


def v2_seal(rec: JobRecord, data: bytes, key: bytes) -> bytes:
    """``data`` (serialized ``(args, kwargs)``) sealed as the pre-v3 ``plugq.security.seal``."""
    msg = b"\x00".join((*(p.encode("utf-8", "surrogateescape") for p in _v2_fields(rec)), data))
    return V2_MAGIC + hmac.new(key, msg, hashlib.sha256).digest() + data


def sealed_data(payload: bytes) -> bytes:
    """The serialized arguments under a seal of any version (4-byte prefix + 32-byte MAC)."""
    return payload[4 + MAC_LEN:]


# -- Redis (rq's layout) ---------------------------------------------------------------

RQ_CALLBACK_FIELDS = ("success_callback_name", "failure_callback_name", "stopped_callback_name")
RQ_V2_BOUND_FIELDS = (
    "origin", "dependency_ids", "allow_dependency_failures", "webhooks", "retry_intervals",
    "plugq_retry_intervals", "timeout", "repeat_intervals",
)
RQ_V2_OPTIONAL_BOUND_FIELDS = ("plugq_pipe",)


def _text(raw: dict[bytes, bytes], field: str) -> str:
    value = raw.get(field.encode())
    return "" if value is None else value.decode("utf-8", "surrogateescape")


def rq_v2_sig(key: bytes, job_id: str, raw: dict[bytes, bytes]) -> str:
    """The ``plugq_sig`` the pre-v3 code wrote for the job hash ``raw`` (bare hex)."""
    stored = raw[b"data"]
    try:
        data = zlib.decompress(stored)
    except zlib.error:
        data = stored
    callbacks = tuple(_text(raw, f) for f in RQ_CALLBACK_FIELDS)
    present = tuple(f"{name}={value}" for name in RQ_V2_OPTIONAL_BOUND_FIELDS
                    if (value := _text(raw, name)))
    bound = (*(_text(raw, name) for name in RQ_V2_BOUND_FIELDS), *present)
    parts: tuple[Any, ...] = (job_id, *callbacks, *bound)
    msg = b"\x00".join((b"plugq-rq-job-v2", *(p.encode("utf-8", "surrogateescape") for p in parts),
                        data))
    return hmac.new(key, msg, hashlib.sha256).hexdigest()
