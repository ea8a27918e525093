"""Job and worker records: defined in :mod:`plugq.storage`."""

from __future__ import annotations

from .storage import JobRecord, WorkerRecord

__all__ = ["JobRecord", "WorkerRecord"]
