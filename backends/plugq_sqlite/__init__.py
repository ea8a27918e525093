"""``sqlite:///PATH``: one SQLite file shared by many processes.

The default backend: zero setup, durable, at-least-once. See
:class:`~plugq_sqlite.backend.SqliteBackend` and docs/sqlite.md.
"""

from __future__ import annotations

from plugq import hookimpl

from .backend import DatabaseLockedError, SqliteBackend

__version__ = "0.1.0"


@hookimpl
def plugq_register_backends(register):  # type: ignore[no-untyped-def]
    register("sqlite", SqliteBackend)


__all__ = ["DatabaseLockedError", "SqliteBackend"]
