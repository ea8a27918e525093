"""Workflows that pass results: chains and groups with a completion callback.

::

    from plugq import Queue, workflow

    q = Queue()
    # fetch(url) -> parse(html) -> store(rows): each step gets the previous result first
    jobs = workflow.chain(q, [Queue.prepare_data(fetch, ("https://…",)),
                              Queue.prepare_data(parse),
                              Queue.prepare_data(store, kwargs={"table": "t"})])
    # resize each image, then report(results) once, after all of them ended
    g = workflow.group(q, [Queue.prepare_data(resize, (p,)) for p in paths],
                       on_complete=Queue.prepare_data(report))

**Chains.** Step ``n + 1`` depends on step ``n`` and is called with step
``n``'s return value as its first positional argument (before its own
``args``). Every step is stored at once, in one atomic batch. If a step
fails for good (its retries used up) or is canceled, every later step is
**canceled** (status ``canceled``, ``exc_info`` says why) instead of waiting
forever; requeueing the failed step does not revive them — enqueue the rest
again.

**Groups.** The members run independently (in parallel on several workers).
The ``on_complete`` job runs **once**, after every member **ended** —
finished, failed (after its retries), canceled or stopped — and is called
with one list of :class:`MemberResult` (member order) as its first argument:
a failed member has ``status='failed'``, ``result=None`` and its
``exc_info``. The callback decides what a failure means.

Results are kept at least ``DEFAULT_RESULT_TTL`` (500 s) for steps and members
whose ``result_ttl`` is shorter, so the next step can read them.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import _events
from ._workflows import MemberResult, encode
from .job import Job
from .queue import EnqueueData, Queue
from .security import seal, unseal
from .storage import DEFAULT_RESULT_TTL, JobRecord


def _keep_result(rec: JobRecord) -> None:
    if 0 <= rec.result_ttl < DEFAULT_RESULT_TTL:
        rec.result_ttl = DEFAULT_RESULT_TTL


def chain(queue: Queue, steps: Sequence[EnqueueData]) -> list[Job]:
    """Enqueue ``steps`` as a chain on ``queue``; returns their jobs, first step first.

    Raises:
        ValueError: no step, or a step with its own ``depends_on``.
        NotSupportedError: the backend has no workflows (a storage without ``pipes``).
    """
    queue.backend.require("workflows")
    if not steps:
        raise ValueError("workflow.chain needs at least one step")
    records: list[JobRecord] = []
    for n, data in enumerate(steps):
        if data.depends_on is not None:
            raise ValueError("a chain step takes no depends_on: the chain sets it")
        rec = queue._record(data)
        if n:
            previous = records[-1]
            rec.depends_on = [previous.id]
            rec.pipe = encode(from_id=previous.id)
        if n < len(steps) - 1:
            _keep_result(rec)
        records.append(rec)
    return _store(queue, records)


def group(
    queue: Queue, members: Sequence[EnqueueData], on_complete: EnqueueData | None = None
) -> list[Job]:
    """Enqueue ``members`` and, if given, ``on_complete`` to run once after all of them ended.

    Returns:
        The members' jobs, then the callback's job last when there is one.

    Raises:
        ValueError: no member.
        NotSupportedError: the backend has no workflows (a storage without ``pipes``).
    """
    queue.backend.require("workflows")
    if not members:
        raise ValueError("workflow.group needs at least one member")
    records = [queue._record(data) for data in members]
    if on_complete is not None:
        for rec in records:
            _keep_result(rec)
        callback = queue._record(on_complete)
        callback.depends_on = [rec.id for rec in records]
        callback.allow_dependency_failure = True
        callback.pipe = encode(group=[rec.id for rec in records])
        records.append(callback)
    return _store(queue, records)


def _store(queue: Queue, records: list[JobRecord]) -> list[Job]:
    if not queue.is_async:
        raise ValueError("workflows need an asynchronous queue (is_async=True)")
    for rec in records:
        # Sealed again: Queue._record sealed each record before the workflow set
        # its depends_on and pipe, which the MAC covers (with PLUGQ_SECRET_KEY
        # set, a step would otherwise read as tampered and be refused unrun).
        rec.payload = seal(rec, unseal(rec.payload))
    stored = queue.backend.enqueue_jobs(records)
    jobs = [Job(queue.backend, r) for r in stored]
    _events.enqueued(jobs)
    return jobs


__all__ = ["MemberResult", "chain", "group"]
