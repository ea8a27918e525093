"""Exceptions raised by plugq.

Names follow RQ where RQ has one (``NoSuchJobError``, ``InvalidJobOperation``,
``DuplicateJobError``, ``JobTimeoutException``, ``AbandonedJobError``) so that
``except`` clauses written for RQ keep working after the import line changes.
"""

from __future__ import annotations


class PlugqError(Exception):
    """Base class of every error plugq raises on purpose."""


class NoSuchJobError(PlugqError):
    """The job id is not in the store (never was, expired, or deleted)."""


class InvalidJobOperation(PlugqError):
    """The operation is not allowed in the job's current state."""


class DuplicateJobError(PlugqError):
    """``unique=True`` and a job with that id is already queued or running.

    ``job_id`` names the job already there when the storage knows it (a
    unique-key conflict always does).
    """

    def __init__(self, message: str = "", job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobTimeoutException(PlugqError):
    """Raised inside a job that ran longer than its ``job_timeout``."""


class JobStoppedException(PlugqError):
    """Raised inside a running job that ``send_stop_job_command`` stopped (as a timeout is)."""


class WorkHorseKilledException(PlugqError):
    """Raised inside a running job whose worker got ``send_kill_horse_command``."""


class AbandonedJobError(PlugqError):
    """The worker running the job stopped heartbeating (it died or hung)."""


class CorruptRecordError(PlugqError):
    """A stored job's fields are corrupt or forged: it was failed unrun ("quarantined").

    The message names the unusable field; nothing of the job was run or deserialized.
    """


class UnknownBackendError(PlugqError, ValueError):
    """A URL names a scheme no installed backend plugin registered."""


class ConfigurationError(PlugqError, ValueError):
    """A configuration value is invalid; the message names key, value and source."""


class BackendUnavailableError(PlugqError):
    """A backend cannot be used here (missing extra, server unreachable, bad file)."""


class NotSupportedError(PlugqError, NotImplementedError):
    """The backend cannot honour this feature; it refuses instead of doing less."""


class InvalidTaskError(PlugqError, ValueError):
    """The callable given to ``enqueue`` cannot be stored as an importable path."""


class SerializationError(PlugqError, ValueError):
    """Arguments, result or meta could not be serialized with the job's serializer."""


__all__ = [
    "AbandonedJobError",
    "BackendUnavailableError",
    "ConfigurationError",
    "CorruptRecordError",
    "DuplicateJobError",
    "InvalidJobOperation",
    "InvalidTaskError",
    "JobStoppedException",
    "JobTimeoutException",
    "NoSuchJobError",
    "NotSupportedError",
    "PlugqError",
    "SerializationError",
    "UnknownBackendError",
    "WorkHorseKilledException",
]
