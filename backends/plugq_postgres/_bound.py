"""Transactional enqueue: plugq's statements on the application's own connection.

Kept apart from the storage module so that ``import plugq_postgres`` works
without psycopg installed (the scheme still lists itself).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: The application's connection plugq writes through in this context, if any.
BOUND: ContextVar[Any] = ContextVar("plugq_postgres_bound_connection", default=None)


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """Run plugq's reads and writes in this block on ``conn``, inside one transaction.

    ``conn`` is the application's ``psycopg.Connection``. The block is
    ``conn.transaction()``: it begins a transaction (or, inside one, a
    savepoint), commits when the block ends and rolls back when it raises.
    Every plugq call made on a ``postgresql://`` queue of the same database
    in this thread (or asyncio task) runs on ``conn`` inside that
    transaction, so a job enqueued here exists only if the block commits —
    and idle workers are woken when it does (``NOTIFY`` is delivered at
    commit)::

        with psycopg.connect(DSN, autocommit=True) as conn:
            with plugq_postgres.transaction(conn):
                conn.execute("INSERT INTO orders (id) VALUES (%s)", (order_id,))
                Queue("mail", connection=DSN).enqueue(send_receipt, order_id)

    Yields:
        ``conn``.

    Raises:
        TypeError: ``conn`` is not a synchronous psycopg connection.
    """
    execute = getattr(conn, "execute", None)
    if execute is None or not hasattr(conn, "transaction") or not hasattr(conn, "info"):
        raise TypeError(
            f"plugq_postgres.transaction() needs a psycopg.Connection, not {type(conn).__name__}"
        )
    if inspect.iscoroutinefunction(execute):
        raise TypeError(
            "plugq_postgres.transaction() needs a synchronous psycopg.Connection; "
            "an AsyncConnection is not supported"
        )
    with conn.transaction():
        token = BOUND.set(conn)
        try:
            yield conn
        finally:
            BOUND.reset(token)
