"""Job statuses: defined in :mod:`plugq.storage`."""

from __future__ import annotations

from .storage import JobStatus

__all__ = ["JobStatus"]
