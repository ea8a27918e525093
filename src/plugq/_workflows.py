"""What a workflow step receives: the engine side of :mod:`plugq.workflow`.

A step's ``pipe`` names its inputs: ``{"from": id}`` (a chain step gets the
previous step's result as its first argument) or ``{"group": [ids]}`` (a
group's completion callback gets one :class:`~plugq.workflow.MemberResult`
list, in member order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _events
from .storage import JobRecord, JobStatus

if TYPE_CHECKING:
    from .backend import Backend


@dataclass(frozen=True)
class MemberResult:
    """One group member as its completion callback sees it."""

    job_id: str
    #: None when the member's record expired or was deleted before the callback ran.
    status: JobStatus | None
    result: Any
    exc_info: str | None

    @property
    def ok(self) -> bool:
        """Whether the member finished."""
        return self.status is JobStatus.FINISHED


def encode(*, from_id: str | None = None, group: list[str] | None = None) -> str:
    return json.dumps({"from": from_id} if from_id is not None else {"group": group})


def inputs(backend: Backend, rec: JobRecord) -> tuple[Any, ...]:
    """The leading arguments of a workflow step, read from the jobs it follows."""
    assert rec.pipe is not None
    spec = json.loads(rec.pipe)
    if "from" in spec:
        parent = backend.fetch_job(spec["from"])
        if parent is None or parent.status is not JobStatus.FINISHED:
            raise RuntimeError(
                f"chain step {rec.id}: the previous step {spec['from']} has no result "
                "(it expired or was deleted before this step ran)"
            )
        return (_events.job_for(backend, parent).return_value(refresh=False),)
    members = []
    for job_id, found in zip(spec["group"], backend.fetch_jobs(spec["group"]), strict=True):
        if found is None:
            members.append(MemberResult(job_id, None, None, None))
            continue
        result = (_events.job_for(backend, found).return_value(refresh=False)
                  if found.status is JobStatus.FINISHED else None)
        members.append(MemberResult(job_id, found.status, result, found.exc_info))
    return (members,)
