"""``Group``: jobs enqueued together and looked up together, as rq 2.x's ``rq.group.Group``.

Membership is kept by the backend (:meth:`plugq.storage.Storage.add_to_group`);
each member also knows its group (``job.group_id``). A group lists the
members that still exist (``get_jobs`` forgets deleted or expired ones).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from .backend import Backend, Pipeline
from .exceptions import PlugqError
from .job import Job
from .queue import EnqueueData, Queue


class NoSuchGroupError(PlugqError):
    """No group with that name exists (it never had a member, or all were removed)."""


class Group:
    """A named set of jobs; ``Group.create(connection=…)`` makes one with a random name."""

    def __init__(self, connection: Any = None, name: str | None = None) -> None:
        from .connection import resolve_connection

        self.backend: Backend = resolve_connection(connection)
        self.connection = self.backend
        self.name = name or uuid.uuid4().hex
        if ":" in self.name:
            raise ValueError(f"group name {self.name!r} must not contain ':'")
        self.backend.require("group", "Group")

    @property
    def id(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Group(id={self.name})"

    @classmethod
    def create(cls, connection: Any = None, name: str | None = None) -> Group:
        return cls(connection=connection, name=name)

    @classmethod
    def fetch(cls, name: str | None = None, connection: Any = None, *, id: str | None = None) -> Group:
        """An existing group (``id=`` is accepted as rq's documentation spells it).

        Raises:
            NoSuchGroupError: no such group.
        """
        group = cls(connection=connection, name=name or id)
        if not group.backend.group_members(group.name):
            raise NoSuchGroupError(f"No such group: {group.name}")
        return group

    @classmethod
    def all(cls, connection: Any = None) -> list[Group]:
        from .connection import resolve_connection

        backend = resolve_connection(connection)
        return [cls(connection=backend, name=n) for n in backend.groups()]

    def enqueue_many(
        self, queue: Queue, job_datas: Iterable[EnqueueData], pipeline: Pipeline | None = None
    ) -> list[Job]:
        """Enqueue ``job_datas`` on ``queue`` as members of this group (one batch)."""
        if queue.backend is not self.backend:
            raise ValueError(f"{queue!r} is on another backend than {self!r}")
        datas = list(job_datas)
        if pipeline is None:
            jobs = queue.enqueue_many(datas, group_id=self.name)
            self.backend.add_to_group(self.name, [j.id for j in jobs])
            return jobs
        jobs = queue.enqueue_many(datas, group_id=self.name, pipeline=pipeline)
        ids = [j.id for j in jobs]
        pipeline.add([], lambda _stored: self.backend.add_to_group(self.name, ids))
        return jobs

    def get_job_ids(self) -> list[str]:
        return self.backend.group_members(self.name)

    def get_jobs(self) -> list[Job]:
        """The members that still exist, in the order they were added."""
        self.cleanup()
        ids = self.backend.group_members(self.name)
        return [Job(self.backend, r) for r in self.backend.fetch_jobs(ids) if r is not None]

    def cleanup(self) -> None:
        """Forget members that were deleted or expired."""
        ids = self.backend.group_members(self.name)
        gone = [i for i, r in zip(ids, self.backend.fetch_jobs(ids), strict=True) if r is None]
        if gone:
            self.backend.remove_from_group(self.name, gone)

    def delete_job(self, job_id: str, pipeline: Pipeline | None = None) -> None:
        """Take ``job_id`` out of the group (the job itself stays)."""
        self.backend.remove_from_group(self.name, [job_id])

    def delete(self) -> None:
        """Forget the group (its jobs stay)."""
        self.backend.remove_from_group(self.name, self.backend.group_members(self.name))


__all__ = ["Group", "NoSuchGroupError"]
