"""What a job carries beyond :class:`~plugq.storage.JobRecord`'s fields.

rq 2.x keeps more per job than the record has fields for: a ``Repeat``, a
group, callback timeouts, an ``on_stopped`` callback, webhooks, how many
times the job asked to be retried. plugq keeps these under one reserved key
of the job's ``meta`` (:data:`KEY`), so every storage stores them without a
schema change (``meta`` is opaque bytes to a storage). The public ``Job``
hides the key from ``job.meta`` and keeps it on ``save_meta``.
"""

from __future__ import annotations

from typing import Any

from .serializers import get_serializer
from .storage import JobRecord, Storage

#: The ``meta`` key extras live under.
KEY = "__plugq__"
_KEY_BYTES = KEY.encode()


def split(rec: JobRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(user meta, extras)`` of a record."""
    if not rec.meta:
        return {}, {}
    meta = dict(get_serializer(rec.serializer).loads(rec.meta))
    extras = meta.pop(KEY, None) or {}
    return meta, dict(extras)


def read(rec: JobRecord) -> dict[str, Any]:
    """The record's extras ({} for the common job that has none, without deserializing)."""
    if not rec.meta or _KEY_BYTES not in rec.meta:
        return {}
    return split(rec)[1]


def join(serializer: str, meta: dict[str, Any], extras: dict[str, Any]) -> bytes:
    """Serialized ``meta`` with ``extras`` under :data:`KEY` (b'' when both are empty)."""
    if not meta and not extras:
        return b""
    data = dict(meta)
    if extras:
        data[KEY] = extras
    return get_serializer(serializer).dumps(data)


def update(storage: Storage, rec: JobRecord, **changes: Any) -> dict[str, Any]:
    """Write ``changes`` into the stored job's extras (re-reading its meta first).

    Returns the new extras. Only ``meta`` is written (a running job's own
    ``save_meta`` is kept).
    """
    stored = storage.get(rec.id)
    meta, extras = split(stored if stored is not None else rec)
    extras.update(changes)
    rec.meta = join(rec.serializer, meta, extras)
    storage.set_meta(rec.id, rec.meta)
    return extras
