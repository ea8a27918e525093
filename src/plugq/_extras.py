"""What a job carries beyond :class:`~plugq.storage.JobRecord`'s fields.

rq 2.x keeps more per job than the record has fields for: a ``Repeat``, a
group, callback timeouts, an ``on_stopped`` callback, webhooks, how many
times the job asked to be retried. plugq keeps these under one reserved key
of the job's ``meta`` (:data:`KEY`), so every storage stores them without a
schema change (``meta`` is opaque bytes to a storage). The public ``Job``
hides the key from ``job.meta`` and keeps it on ``save_meta``.
"""

from __future__ import annotations

import logging
from typing import Any

from .security import UntrustedJobError, load_stored, seal_blob
from .serializers import get_serializer
from .storage import JobRecord, Storage

log = logging.getLogger("plugq.worker")

#: The ``meta`` key extras live under.
KEY = "__plugq__"
_KEY_BYTES = KEY.encode()


def split(rec: JobRecord, *, verified_by_backend: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(user meta, extras)`` of a record (meta's signature checked when a key is set).

    Raises:
        UntrustedJobError: the meta cannot be verified; nothing was deserialized.
    """
    if not rec.meta:
        return {}, {}
    meta = dict(load_stored(rec, "meta", rec.meta, verified_by_backend=verified_by_backend))
    extras = meta.pop(KEY, None) or {}
    return meta, dict(extras)


def read(rec: JobRecord, *, verified_by_backend: bool = False) -> dict[str, Any]:
    """The record's extras ({} for the common job that has none, without deserializing).

    Meta that fails its signature check gives no extras (logged): nothing in
    it is acted on.
    """
    if not rec.meta or _KEY_BYTES not in rec.meta:
        return {}
    try:
        return split(rec, verified_by_backend=verified_by_backend)[1]
    except UntrustedJobError as exc:
        log.error("job %s: %s; its repeat, callbacks and webhooks are ignored", rec.id, exc)
        return {}


def join(job_id: str, serializer: str, meta: dict[str, Any], extras: dict[str, Any]) -> bytes:
    """Serialized, sealed ``meta`` with ``extras`` under :data:`KEY` (b'' when both are empty)."""
    if not meta and not extras:
        return b""
    data = dict(meta)
    if extras:
        data[KEY] = extras
    return seal_blob(job_id, "meta", get_serializer(serializer).dumps(data))


def update(storage: Storage, rec: JobRecord, **changes: Any) -> dict[str, Any]:
    """Write ``changes`` into the stored job's extras (re-reading its meta first).

    Returns the new extras. Only ``meta`` is written (a running job's own
    ``save_meta`` is kept).
    """
    stored = storage.get(rec.id)
    meta, extras = split(stored if stored is not None else rec)
    extras.update(changes)
    rec.meta = join(rec.id, rec.serializer, meta, extras)
    storage.set_meta(rec.id, rec.meta)
    return extras
