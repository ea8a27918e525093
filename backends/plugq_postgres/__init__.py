"""``postgresql://…``: jobs in the PostgreSQL database you already run.

See :class:`~plugq_postgres.storage.PostgresStorage` and docs/postgres.md.
:func:`transaction` enqueues inside the application's own transaction.

psycopg is imported when a ``postgresql://`` URL is first used, not when
plugins are loaded: without ``plugq[postgres]`` installed the scheme still
lists itself and using it raises an error naming the extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plugq import hookimpl
from plugq.exceptions import BackendUnavailableError

from ._bound import transaction

if TYPE_CHECKING:
    from .storage import PostgresStorage

__version__ = "0.1.0"

EXTRA_HINT = "pip install 'plugq[postgres]'"


def make_storage(url: str) -> PostgresStorage:
    """Build the storage for ``url`` (see :class:`~plugq_postgres.storage.PostgresStorage`).

    Raises:
        BackendUnavailableError: psycopg or psycopg-pool is not installed.
    """
    try:
        from .storage import PostgresStorage
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the postgres backend needs psycopg 3 and psycopg-pool, which are not installed "
            f"({exc}); install them with: {EXTRA_HINT}"
        ) from None
    return PostgresStorage(url)


@hookimpl
def plugq_register_backends(register):  # type: ignore[no-untyped-def]
    register("postgresql", make_storage)
    register("postgres", make_storage)


def __getattr__(name: str) -> Any:
    if name == "PostgresStorage":
        from . import storage

        return storage.PostgresStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PostgresStorage", "make_storage", "transaction"]
