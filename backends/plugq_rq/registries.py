"""rq's registry cleanup, minus one hazard: executions of jobs that already ended.

rq's ``StartedJobRegistry.cleanup`` treats every expired ``rq:wip`` entry as an
abandoned job and retries or fails it, whatever the job's status. An entry
can outlive its job's run (a worker killed after the job ended but before its
execution entry was removed); recovering it would fail a finished job or run
it twice. Such entries are dropped first; rq's cleanup then sees only jobs
that are still started.
"""

from __future__ import annotations

from typing import Any

from rq.registry import StartedJobRegistry
from rq.registry import clean_registries as rq_clean_registries
from rq.utils import current_timestamp

from .jobs import PlugqJob

_STARTED = b"started"


def drop_ended_executions(queue: Any) -> int:
    """Remove expired wip entries whose job is no longer started; returns how many."""
    conn = queue.connection
    registry = StartedJobRegistry(queue.name, connection=conn, job_class=PlugqJob)
    entries = conn.zrangebyscore(registry.key, 0, current_timestamp())
    if not entries:
        return 0
    with conn.pipeline(transaction=False) as pipe:
        for entry in entries:
            pipe.hget(PlugqJob.key_for(registry.parse_job_id(entry)), "status")
        statuses = pipe.execute()
    ended = [e for e, status in zip(entries, statuses, strict=True) if status != _STARTED]
    if ended:
        conn.zrem(registry.key, *ended)
    return len(ended)


def clean_registries(queue: Any, exception_handlers: list[Any] | None = None) -> None:
    """rq's ``clean_registries`` after :func:`drop_ended_executions`."""
    drop_ended_executions(queue)
    rq_clean_registries(queue, exception_handlers)
