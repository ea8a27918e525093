"""``Result``: one outcome of a job, as rq 2.x's ``rq.results.Result``.

``job.latest_result()`` is the outcome stored on the job itself;
``job.results()`` adds the earlier ones (a retried, repeated or requeued job
ran more than once), newest first, at most :data:`~plugq._rules.RESULTS_KEPT`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any

from . import _rules
from ._clock import to_datetime
from .storage import JobRecord, ResultRecord

#: Reads a stored result blob (its signature checked when a key is set).
Loader = Callable[[bytes], Any]


class Result:
    """One outcome: ``type``, ``return_value`` (successful), ``exc_string`` (otherwise), ``created_at``."""

    class Type(Enum):
        SUCCESSFUL = 1
        FAILED = 2
        STOPPED = 3
        RETRIED = 4
        MAX_RETRIES_EXCEEDED = 5

    def __init__(
        self, job_id: str, type: Result.Type, created_at: datetime | None,
        return_value: Any = None, exc_string: str | None = None, worker_name: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.type = type
        self.created_at = created_at
        self.return_value = return_value
        self.exc_string = exc_string
        self.worker_name = worker_name or ""
        self.id = f"{job_id}-{created_at.timestamp() if created_at else 0:.6f}"

    def __repr__(self) -> str:
        return f"Result(id={self.id}, type={self.type.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and other.id == self.id and other.type == self.type

    def __hash__(self) -> int:
        return hash((self.id, self.type))

    @classmethod
    def _make(
        cls, job_id: str, kind: str, at: float | None, result: bytes | None, exc: str | None,
        worker: str | None, load: Loader,
    ) -> Result:
        value = None
        if kind == "successful" and result:
            value = load(result)
        return cls(job_id, cls.Type[kind.upper()], to_datetime(at), value,
                   None if kind == "successful" else exc, worker)

    @classmethod
    def from_record(cls, rec: JobRecord, load: Loader) -> Result | None:
        """The latest outcome stored on ``rec`` (None if it never ended)."""
        kind = _rules.outcome_type(rec)
        if kind is None:
            return None
        return cls._make(rec.id, kind, rec.ended_at, rec.result, rec.exc_info, rec.worker_name,
                         load)

    @classmethod
    def from_entry(cls, entry: ResultRecord, load: Loader) -> Result:
        """An earlier outcome from the results history."""
        return cls._make(entry.job_id, entry.type, entry.created_at, entry.result, entry.exc_info,
                         entry.worker_name, load)


__all__ = ["Result"]
