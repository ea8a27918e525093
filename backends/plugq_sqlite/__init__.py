"""``sqlite:///PATH``: one SQLite file shared by many processes.

The default backend: zero setup, durable, at-least-once. See
:class:`~plugq_sqlite.backend.SqliteStorage` and docs/sqlite.md.

The backend module (and ``sqlite3``) is imported when a ``sqlite://`` URL is
first used, not when plugins are loaded: a process using another backend (a
Redis worker forking a work horse per job) does not carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plugq import hookimpl

if TYPE_CHECKING:
    from .backend import DatabaseLockedError, SqliteBackend, SqliteStorage

__version__ = "0.1.0"


def make_storage(url: str) -> SqliteStorage:
    """Build the storage for ``url`` (see :class:`~plugq_sqlite.backend.SqliteStorage`)."""
    from .backend import SqliteStorage

    return SqliteStorage(url)


@hookimpl
def plugq_register_backends(register):  # type: ignore[no-untyped-def]
    register("sqlite", make_storage)


def __getattr__(name: str) -> Any:
    if name in ("DatabaseLockedError", "SqliteBackend", "SqliteStorage"):
        from . import backend

        return getattr(backend, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DatabaseLockedError", "SqliteBackend", "SqliteStorage"]
