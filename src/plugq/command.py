"""Commands to running workers, as rq's ``rq.command``.

On every storage they travel through the storage
(:meth:`plugq.storage.Storage.send_command`); a worker looks for its commands
four times a second, busy or idle. ``stop-job`` interrupts the running job
the way a timeout does (it ends ``stopped``, is never retried, and its
``on_stopped`` callback runs); ``kill-horse`` interrupts it as a failure
(retried if it has retries left; ``work_horse_killed_handler`` is called);
``shutdown`` is a warm shutdown.
"""

from __future__ import annotations

from typing import Any

from .exceptions import InvalidJobOperation
from .job import Job


def send_command(connection: Any, worker_name: str, command: str, **kwargs: str) -> None:
    """Send ``command`` (``shutdown``, ``kill-horse``, ``stop-job``) to worker ``worker_name``."""
    from .connection import resolve_connection

    resolve_connection(connection).send_command(worker_name, {"command": command, **kwargs})


def send_shutdown_command(connection: Any, worker_name: str) -> None:
    """Ask the worker to finish its current job, then stop."""
    send_command(connection, worker_name, "shutdown")


def send_kill_horse_command(connection: Any, worker_name: str) -> None:
    """Interrupt the worker's current job as a failure; the worker carries on."""
    send_command(connection, worker_name, "kill-horse")


def send_stop_job_command(connection: Any, job_id: str, serializer: Any = None) -> None:
    """Stop a running job: it ends with status ``stopped``.

    Raises:
        NoSuchJobError: no such job.
        InvalidJobOperation: the job is not currently executing.
    """
    job = Job.fetch(job_id, connection=connection)
    if job.get_status(refresh=False) != "started" or not job.worker_name:
        raise InvalidJobOperation("Job is not currently executing")
    send_command(job.connection, job.worker_name, "stop-job", job_id=job_id)


__all__ = [
    "send_command",
    "send_kill_horse_command",
    "send_shutdown_command",
    "send_stop_job_command",
]
