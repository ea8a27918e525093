"""The :class:`plugq.storage.Storage` primitives on PostgreSQL (psycopg 3 and a connection pool).

Read top to bottom: SQL, rows and records, the storage (opening, the pool,
the retry that waits out a lost server, the application's connection for
transactional enqueue), then one method per primitive, then :meth:`wait`
(``LISTEN``/``NOTIFY``).

Every primitive is one statement in autocommit mode (atomic on its own) or,
where it needs several, one short transaction. A statement that puts a job on
a queue also sends ``NOTIFY`` on the schema's channel with the queue's name as
payload, in the same statement, so the wake-up is exactly as transactional as
the write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any, ClassVar, NoReturn, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from plugq._quarantine import (
    Unparsable,
    job_problem,
    quarantine_exc_info,
    quarantined,
    quarantined_worker,
    worker_problem,
)
from plugq.exceptions import BackendUnavailableError, ConfigurationError, DuplicateJobError
from plugq.storage import Clock, JobRecord, JobStatus, Storage, UniqueKey, WorkerRecord

from . import schema
from ._bound import BOUND
from ._url import Settings, parse_url

T = TypeVar("T")
log = logging.getLogger("plugq.postgres")

_STATUS = {s.value: s for s in JobStatus}
_COLS = ", ".join(schema.JOB_COLUMNS)
_WCOLS = ", ".join(schema.WORKER_COLUMNS)
_CHUNK = 1000
#: From this many records a batch is written with COPY rather than row by row.
_COPY_MIN = 64


def _text(value: str | None) -> str | None:
    """Text PostgreSQL can store: a traceback quoting a NUL or a lone surrogate must still be kept."""
    if value is None or (value.isascii() and "\x00" not in value):
        return value
    value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _params(r: JobRecord) -> tuple[Any, ...]:
    """A record as a row, in :data:`schema.JOB_COLUMNS` order."""
    return (
        r.id, r.func_name, r.origin, r.payload, r.serializer, r.status.value,
        _text(r.description), r.created_at, r.enqueued_at, r.started_at, r.ended_at, r.timeout,
        r.result_ttl, r.failure_ttl, r.ttl, r.meta, r.result, _text(r.exc_info), r.worker_name,
        r.retries_left, [float(x) for x in r.retry_intervals] if r.retry_intervals else None,
        list(r.depends_on) if r.depends_on else None, bool(r.allow_dependency_failure),
        r.on_success, r.on_failure, r.scheduled_for, r.expires_at, bool(r.at_front), r.attempts,
        r.priority, r.unique_key, r.rate_limit, r.pipe,
    )


def _record(row: Sequence[Any]) -> tuple[JobRecord, str | None]:
    """A row (in :data:`schema.JOB_COLUMNS` order) as a record, and its first unusable field.

    Never raises: the column types still let whoever can write the table
    store a status that is not one, NaN or a negative count, an array with
    NULLs or of two dimensions; one such row must not stop the worker that
    reads it (:mod:`plugq._quarantine` says which field is unusable).
    """
    rec = JobRecord(*row)
    status = _STATUS.get(row[5]) if isinstance(row[5], str) else None
    rec.status = status if status is not None else Unparsable(  # type: ignore[assignment]
        f"{row[5]!r:.40} is not a job status"
    )
    # A two-dimensional array reads as a list of lists, which the checks refuse.
    rec.retry_intervals = list(row[20]) if row[20] else []
    rec.depends_on = list(row[21]) if row[21] else []
    return rec, job_problem(rec)


def _worker(row: Sequence[Any]) -> WorkerRecord:
    w = WorkerRecord(*row)
    w.queues = list(row[1])
    problem = worker_problem(w)
    return w if problem is None else quarantined_worker(w, problem)


def _oneline(exc: BaseException) -> str:
    """libpq's messages span lines ("Is the server running…?"); errors here are one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_lost(exc: BaseException) -> bool:
    """True for errors that mean "the server went away (or is not back yet)": worth waiting out."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, (errors.SerializationFailure, errors.DeadlockDetected)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return (
        state is None
        or state.startswith("08")  # connection exceptions
        or state in ("57P01", "57P02", "57P03", "53300")  # shutdown, crash, starting, too many
    )


class _Sql:
    """Every statement, for one schema."""

    def __init__(self, name: str) -> None:
        s = schema.quote_ident(name)
        self.s = s
        pos = f"nextval('{s}.job_pos')"
        self.new_pos = f"CASE WHEN %s THEN -{pos} ELSE {pos} END"
        placeholders = ", ".join(["%s"] * len(schema.JOB_COLUMNS))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in schema.JOB_COLUMNS[1:])
        self.insert = (
            f"INSERT INTO {s}.jobs ({_COLS}, pos) VALUES ({placeholders}, {self.new_pos}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}, pos = EXCLUDED.pos"
        )
        self.insert_notify = (
            f"WITH i AS ({self.insert} RETURNING origin) SELECT pg_notify(%s, origin) FROM i"
        )
        self.notify_many = "SELECT pg_notify(%s, q) FROM unnest(%s::text[]) AS q"
        self.get = f"SELECT {_COLS} FROM {s}.jobs WHERE id = %s"
        self.get_many = f"SELECT {_COLS} FROM {s}.jobs WHERE id = ANY(%s)"
        self.claim = f"SELECT {_COLS} FROM {s}.claim(%s, %s, %s)"
        self.claimed = (
            f"SELECT {_COLS} FROM {s}.jobs WHERE status = 'started' AND worker_name = %s "
            "AND started_at = %s LIMIT 1"
        )
        self.any_queued = (
            f"SELECT 1 FROM {s}.jobs WHERE origin = ANY(%s) AND status = 'queued' "
            "AND (expires_at IS NULL OR expires_at > %s) LIMIT 1"
        )
        self._put: dict[tuple[bool, bool, bool], str] = {}

    def put(self, expected: bool, attempts: bool, notify: bool) -> str:
        key = (expected, attempts, notify)
        sql = self._put.get(key)
        if sql is None:
            # The right-hand sides of SET read the row as it was, so "origin = %s AND
            # status = %s" asks whether the job stays where it is (it keeps its place)
            # or moves to another queue or registry (it takes a new one).
            sets = ", ".join(f"{c} = %s" for c in schema.JOB_COLUMNS[1:] if c != "meta")
            sql = (
                f"UPDATE {self.s}.jobs SET {sets}, pos = CASE WHEN origin = %s AND status = %s "
                f"THEN pos ELSE {self.new_pos} END WHERE id = %s"
            )
            if expected:
                sql += " AND status = ANY(%s)"
            if attempts:
                sql += " AND attempts = %s"
            if notify:
                sql = f"WITH u AS ({sql} RETURNING origin) SELECT pg_notify(%s, origin) FROM u"
            self._put[key] = sql
        return sql


# Pools and connections inherited through fork(): never used, closed or
# garbage-collected in the child, where closing one would end the parent's
# session on the shared socket.
_ORPHANS: list[Any] = []
_STORAGES: weakref.WeakSet[PostgresStorage] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for storage in list(_STORAGES):
        storage._forget_inherited_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


class PostgresStorage(Storage):
    """Jobs, registries and workers in one PostgreSQL schema.

    ``postgresql://USER:PASSWORD@HOST:PORT/DB[?schema=plugq&lease=60&pool_size=8&reconnect_timeout=60]``
    (``postgres://`` too; libpq's own parameters such as ``sslmode`` pass through).

    * The claim is one round trip: a function takes, queue by queue in the
      order given, the first queued row of the ``(origin, status, pos)`` index
      with ``FOR UPDATE SKIP LOCKED`` and marks it started.
    * An idle worker ``LISTEN``\\ s on the schema's channel; every statement
      that queues a job ``NOTIFY``\\ s it with the queue's name, delivered at
      commit, so workers wake in about a millisecond and never poll.
    * Each process has a pool of connections (``pool_size``); a lost server
      is waited out with growing pauses for up to ``reconnect_timeout``
      seconds, then :class:`~plugq.exceptions.BackendUnavailableError`.
    * Inside :func:`plugq_postgres.transaction` every primitive runs on the
      application's connection, in its transaction.
    """

    scheme: ClassVar[str] = "postgresql"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"priority", "unique_keys", "progress", "values", "pipes"}
    )

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        super().__init__(url, clock)
        self.settings: Settings = parse_url(url)
        #: The PostgreSQL schema the tables live in.
        self.schema = self.settings.schema
        self.lease = self.settings.lease
        self.channel = schema.channel(self.schema)
        self._sql = _Sql(self.schema)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pool_obj: ConnectionPool | None = None
        self._listeners: dict[threading.Thread, psycopg.Connection[Any]] = {}
        self._local = threading.local()
        self._outage_logged = False
        self.dbname = ""
        self._open()
        _STORAGES.add(self)

    # -- opening -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection, or a clear one-line error."""
        try:
            return psycopg.connect(self.settings.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise BackendUnavailableError(
                f"cannot connect to PostgreSQL at {self.safe_url()}: {_oneline(exc)}"
            ) from None

    def _open(self) -> None:
        """Check the schema is ours (or absent) and create or upgrade it."""
        conn = self._connect()
        try:
            self.dbname = conn.info.dbname
            schema.migrate(conn, self.schema)
        except psycopg.Error as exc:
            raise BackendUnavailableError(
                f"{self.safe_url()}: cannot prepare schema {self.schema!r}: {_oneline(exc)}"
            ) from None
        finally:
            conn.close()

    def _pool(self) -> ConnectionPool:
        pool = self._pool_obj
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pid != os.getpid():
                self._forget_inherited_connections()
            if self._pool_obj is None:
                self._pool_obj = ConnectionPool(
                    self.settings.conninfo,
                    min_size=1,
                    max_size=self.settings.pool_size,
                    kwargs={"autocommit": True},
                    name=f"plugq-{self.schema}",
                    open=True,
                )
            return self._pool_obj

    def _forget_inherited_connections(self) -> None:
        """In a forked child: set the parent's pool and listeners aside, unused and unclosed."""
        if self._pool_obj is not None:
            _ORPHANS.append(self._pool_obj)
        _ORPHANS.extend(self._listeners.values())
        self._pool_obj = None
        self._listeners = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close this process's pool and listening connections; a later call opens new ones."""
        if self._pid != os.getpid():
            self._forget_inherited_connections()
            return
        with self._lock:
            pool, self._pool_obj = self._pool_obj, None
            listeners, self._listeners = list(self._listeners.values()), {}
        self._local = threading.local()
        for conn in listeners:
            with contextlib.suppress(Exception):
                conn.close()
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close(timeout=2)

    # -- running statements -------------------------------------------------------------

    def _run(
        self, fn: Callable[[psycopg.Cursor[Any]], T], *, tx: bool = False,
        again: Callable[[psycopg.Cursor[Any]], T] | None = None,
    ) -> T:
        """Run ``fn(cursor)`` on a pooled connection (in a transaction with ``tx``).

        Inside :func:`plugq_postgres.transaction` it runs on the application's
        connection instead, once. Otherwise a lost server is waited out: the
        call is retried with growing, randomised pauses for up to
        ``reconnect_timeout`` seconds. ``again`` replaces ``fn`` on a retry,
        for a statement whose first try may have committed unseen.

        Raises:
            BackendUnavailableError: the server stayed away, or refused the write
                for a reason about the database (disk full, read-only, schema gone).
        """
        bound = BOUND.get()
        if bound is not None:
            return self._run_bound(bound, fn, tx)
        first: BaseException | None = None
        deadline = pause = 0.0
        call = fn
        while True:
            try:
                pool = self._pool()
                wait = 5.0 if first is None else max(0.05, min(5.0, deadline - time.monotonic()))
                with pool.connection(timeout=wait) as conn:
                    if tx:
                        with conn.transaction(), conn.cursor() as cur:
                            result = call(cur)
                    else:
                        with conn.cursor() as cur:
                            result = call(cur)
                if first is not None and self._outage_logged:
                    log.info("PostgreSQL at %s is back", self.safe_url())
                    self._outage_logged = False
                return result
            except (psycopg.Error, PoolTimeout) as exc:
                if not _is_lost(exc):
                    self._raise_for(exc)
                if first is None:
                    first = exc
                    deadline = time.monotonic() + self.settings.reconnect_timeout
                    pause = 0.02
                    if not isinstance(exc, errors.TransactionRollback):
                        self._outage_logged = True
                        log.warning(
                            "lost PostgreSQL at %s (%s); retrying for up to %g s",
                            self.safe_url(), _oneline(exc), self.settings.reconnect_timeout,
                        )
            if again is not None:
                call = again
            if time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"PostgreSQL at {self.safe_url()} did not come back within "
                    f"{self.settings.reconnect_timeout:g} s ({_oneline(first)}); "
                    "raise ?reconnect_timeout=SECONDS in the URL to wait longer"
                ) from first
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 2.0)

    def _run_bound(
        self, conn: psycopg.Connection[Any], fn: Callable[[psycopg.Cursor[Any]], T], tx: bool
    ) -> T:
        if conn.info.dbname != self.dbname:
            raise ConfigurationError(
                f"inside plugq_postgres.transaction() on database {conn.info.dbname!r}, a queue on "
                f"{self.safe_url()} (database {self.dbname!r}) was used; transactional enqueue "
                "needs the queue's database to be the connection's"
            )
        try:
            with conn.cursor(row_factory=tuple_row) as cur:
                if tx:
                    # Inside the application's transaction this is a savepoint: the
                    # primitive stays atomic on its own and a refusal (a duplicate
                    # unique id) leaves the application's transaction usable.
                    with conn.transaction():
                        return fn(cur)
                return fn(cur)
        except psycopg.Error as exc:
            self._raise_for(exc)

    def _raise_for(self, exc: BaseException) -> NoReturn:
        """Re-raise ``exc``, as a BackendUnavailableError when it is about the database."""
        why = None
        if isinstance(exc, errors.DiskFull):
            why = "the server's disk is full; nothing of this call was written"
        elif isinstance(exc, errors.ReadOnlySqlTransaction):
            why = "the server is read-only (a standby, or default_transaction_read_only)"
        elif isinstance(exc, errors.InsufficientPrivilege):
            why = f"the user may not use schema {self.schema!r}"
        elif isinstance(exc, (errors.UndefinedTable, errors.UndefinedFunction,
                              errors.InvalidSchemaName)):
            why = f"plugq's tables in schema {self.schema!r} are gone (dropped while in use?)"
        elif isinstance(exc, PoolTimeout) or _is_lost(exc):
            why = "the connection was lost"
        if why is None:
            raise exc
        raise BackendUnavailableError(
            f"PostgreSQL at {self.safe_url()}: {why} ({_oneline(exc)})"
        ) from exc

    # -- primitives: jobs ------------------------------------------------------------------

    def insert(
        self, records: Sequence[JobRecord], *, unique_ids: Collection[str] = (),
        unique_keys: Sequence[UniqueKey] = (),
    ) -> None:
        if not records:
            return
        sql = self._sql
        queued = JobStatus.QUEUED
        if len(records) == 1 and not unique_ids and not unique_keys:
            rec = records[0]
            front = rec.at_front and rec.status is queued
            if rec.status is queued:
                params: tuple[Any, ...] = (*_params(rec), front, self.channel)
                self._run(lambda c: c.execute(sql.insert_notify, params))
            else:
                params = (*_params(rec), front)
                self._run(lambda c: c.execute(sql.insert, params))
            return
        origins = sorted({rec.origin for rec in records if rec.status is queued})
        ids = sorted(set(unique_ids))

        def write(c: psycopg.Cursor[Any]) -> None:
            if len(records) >= _COPY_MIN:
                # COPY is about three times faster than a pipelined INSERT per row,
                # but cannot replace an existing id: a batch that meets one (rare:
                # a re-enqueue under a fixed job_id) is written again row by row.
                try:
                    with c.connection.transaction():
                        self._copy(c, records)
                    return
                except errors.UniqueViolation:
                    pass
            c.executemany(sql.insert, [
                (*_params(rec), rec.at_front and rec.status is queued) for rec in records
            ])

        def body(c: psycopg.Cursor[Any]) -> None:
            if ids:
                # Two unique enqueues of one id serialise here; the second then sees the first.
                c.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(i, 0)) "
                    "FROM unnest(%s::text[]) AS i",
                    (ids,),
                )
                c.execute(
                    f"SELECT id, status FROM {sql.s}.jobs WHERE id = ANY(%s) "
                    "AND status IN ('queued', 'started') LIMIT 1",
                    (ids,),
                )
                row = c.fetchone()
                if row is not None:
                    raise DuplicateJobError(f"Job {row[0]} is already {row[1]}", job_id=row[0])
            for cond in unique_keys:
                self._check_unique_key(c, cond)
            write(c)
            if origins:
                c.execute(sql.notify_many, (self.channel, origins))

        self._run(body, tx=True)

    def _check_unique_key(self, c: psycopg.Cursor[Any], cond: UniqueKey) -> None:
        # Inserts of one key serialise on this lock (held to commit); the
        # second then sees the first's row.
        c.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))",
            (f"plugq unique {self.schema} {cond.key}",),
        )
        c.execute(
            f"SELECT id, status FROM {self._sql.s}.jobs WHERE unique_key = %s "
            "AND status = ANY(%s) AND (%s::float8 IS NULL OR created_at > %s) "
            "ORDER BY created_at DESC LIMIT 1",
            (cond.key, [s.value for s in cond.statuses], cond.since, cond.since),
        )
        row = c.fetchone()
        if row is not None:
            raise DuplicateJobError(
                f"Job {row[0]} holds unique key {cond.key!r} ({row[1]})", job_id=row[0]
            )

    def _copy(self, c: psycopg.Cursor[Any], records: Sequence[JobRecord]) -> None:
        """Write new records with one ``COPY``; their places come from the sequence in one call."""
        s = self._sql.s
        c.execute(
            f"SELECT array_agg(nextval('{s}.job_pos')) FROM generate_series(1, %s)",
            (len(records),),
        )
        row = c.fetchone()
        moments = row[0] if row else []
        queued = JobStatus.QUEUED
        with c.copy(f"COPY {s}.jobs ({_COLS}, pos) FROM STDIN") as copy:
            for rec, moment in zip(records, moments, strict=True):
                copy.write_row(
                    (*_params(rec), -moment if rec.at_front and rec.status is queued else moment)
                )

    def get(self, job_id: str) -> JobRecord | None:
        def read(c: psycopg.Cursor[Any]) -> Any:
            return c.execute(self._sql.get, (job_id,)).fetchone()

        row = self._run(read)
        return None if row is None else self._decode(row)

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        ids = list(job_ids)
        found: dict[str, JobRecord] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]

            def read(c: psycopg.Cursor[Any], chunk: list[str] = chunk) -> list[Any]:
                return c.execute(self._sql.get_many, (chunk,)).fetchall()

            for row in self._run(read):
                found[row[0]] = self._decode(row)
        return [found.get(job_id) for job_id in ids]

    def put(
        self, record: JobRecord, *, expected: Collection[JobStatus] | None = None,
        expected_attempts: int | None = None,
    ) -> bool:
        statuses = None if expected is None else [s.value for s in expected]
        if statuses is not None and not statuses:
            return False
        notify = record.status is JobStatus.QUEUED
        sql = self._sql.put(statuses is not None, expected_attempts is not None, notify)
        values = _params(record)
        params: list[Any] = [
            *values[1:15], *values[16:],  # every column but id and meta
            record.origin, record.status.value,
            record.at_front and record.status is JobStatus.QUEUED, record.id,
        ]
        if statuses is not None:
            params.append(statuses)
        if expected_attempts is not None:
            params.append(expected_attempts)
        if notify:
            params.append(self.channel)

        def write(c: psycopg.Cursor[Any]) -> bool:
            c.execute(sql, params)
            return c.rowcount == 1

        def write_again(c: psycopg.Cursor[Any]) -> bool:
            # The first try may have committed before the connection dropped:
            # then the row already holds this very state.
            if write(c):
                return True
            row = c.execute(self._sql.get, (record.id,)).fetchone()
            if row is None:
                return False
            stored, _ = _record(row)
            return (stored.status is record.status and stored.attempts == record.attempts
                    and stored.ended_at == record.ended_at
                    and stored.worker_name == record.worker_name)

        return self._run(write, again=write_again)

    def remove(self, job_id: str) -> bool:
        def delete(c: psycopg.Cursor[Any]) -> bool:
            c.execute(f"DELETE FROM {self._sql.s}.jobs WHERE id = %s", (job_id,))
            return c.rowcount > 0

        return self._run(delete)

    def set_meta(self, job_id: str, meta: bytes) -> bool:
        def update(c: psycopg.Cursor[Any]) -> bool:
            c.execute(f"UPDATE {self._sql.s}.jobs SET meta = %s WHERE id = %s", (meta, job_id))
            return c.rowcount > 0

        return self._run(update)

    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        if not queues:
            return None
        params = (list(queues), worker_name, now)
        sql = self._sql

        failed: list[JobRecord] = []

        def take(c: psycopg.Cursor[Any]) -> JobRecord | None:
            # A poison row is failed in this same transaction and the next job
            # taken: it is never seen started, and never blocks the queue.
            failed.clear()
            while True:
                row = c.execute(sql.claim, params).fetchone()
                if row is None:
                    return None
                rec, problem = _record(row)
                if problem is None:
                    return rec
                poison = self._quarantine(c, rec, problem)
                if poison is not None:
                    failed.append(poison)

        def take_again(c: psycopg.Cursor[Any]) -> JobRecord | None:
            # A claim that committed before the connection dropped left its row
            # started by us at ``now``: take that one rather than strand it.
            row = c.execute(sql.claimed, (worker_name, now)).fetchone()
            if row is not None:
                rec, problem = _record(row)
                if problem is None:
                    return rec
            return take(c)

        rec = self._run(take, tx=True, again=take_again)
        for poison in failed:
            self.report_quarantined(poison)
        return rec

    # -- primitives: listings -------------------------------------------------------------

    def _column(self, query: str, params: tuple[Any, ...]) -> list[Any]:
        return [row[0] for row in self._run(lambda c: c.execute(query, params).fetchall())]

    def ids(
        self, queue: str, status: JobStatus, offset: int = 0, length: int = -1, *,
        now: float | None = None,
    ) -> list[str]:
        return self._column(
            f"SELECT id FROM {self._sql.s}.jobs WHERE origin = %s AND status = %s "
            "AND (%s::float8 IS NULL OR expires_at IS NULL OR expires_at > %s) "
            "ORDER BY qrank, pos LIMIT %s OFFSET %s",
            (queue, status.value, now, now, length if length >= 0 else None, max(offset, 0)),
        )

    def count_status(self, queue: str, status: JobStatus, *, now: float | None = None) -> int:
        return int(self._column(
            f"SELECT count(*) FROM {self._sql.s}.jobs WHERE origin = %s AND status = %s "
            "AND (%s::float8 IS NULL OR expires_at IS NULL OR expires_at > %s)",
            (queue, status.value, now, now),
        )[0])

    def queues(self) -> list[str]:
        # A loose scan of the queue index: one descent per distinct name
        # instead of reading every row as SELECT DISTINCT would.
        s = self._sql.s
        return self._column(
            f"WITH RECURSIVE t(o) AS (SELECT min(origin) FROM {s}.jobs UNION ALL "
            f"SELECT (SELECT min(origin) FROM {s}.jobs WHERE origin > t.o) FROM t "
            "WHERE t.o IS NOT NULL) SELECT o FROM t WHERE o IS NOT NULL AND o <> ''",
            (),
        )

    def remove_queued(self, queue: str) -> int:
        def delete(c: psycopg.Cursor[Any]) -> int:
            c.execute(
                f"DELETE FROM {self._sql.s}.jobs WHERE origin = %s AND status = 'queued'", (queue,)
            )
            return c.rowcount

        return self._run(delete)

    def due(self, now: float, limit: int = 100) -> list[str]:
        return self._column(
            f"SELECT id FROM {self._sql.s}.jobs WHERE status = 'scheduled' AND scheduled_for <= %s "
            "ORDER BY scheduled_for, id LIMIT %s",
            (now, limit),
        )

    def expired(self, now: float, limit: int = 100) -> list[str]:
        return self._column(
            f"SELECT id FROM {self._sql.s}.jobs WHERE expires_at IS NOT NULL AND expires_at <= %s "
            "ORDER BY expires_at LIMIT %s",
            (now, limit),
        )

    def dependents(self, job_id: str) -> list[str]:
        return self._column(
            f"SELECT id FROM {self._sql.s}.jobs WHERE status = 'deferred' "
            "AND depends_on @> ARRAY[%s::text]",
            (job_id,),
        )

    def started_by_dead_workers(self, now: float, exclude: str | None = None) -> list[JobRecord]:
        s = self._sql.s
        cols = ", ".join(f"j.{c}" for c in schema.JOB_COLUMNS)
        query = (
            f"SELECT {cols} FROM {s}.jobs j LEFT JOIN {s}.workers w ON w.name = j.worker_name "
            "WHERE j.status = 'started' AND j.worker_name IS DISTINCT FROM %s::text "
            "AND (w.name IS NULL OR w.last_heartbeat + %s <= %s) ORDER BY j.pos"
        )
        rows = self._run(lambda c: c.execute(query, (exclude, self.lease, now)).fetchall())
        found = []
        for row in rows:
            rec, problem = _record(row)
            if problem is None:
                found.append(rec)
                continue
            # Called by maintenance, which writes what it finds: a corrupt
            # started row is failed in the table here rather than listed.
            def fail(c: psycopg.Cursor[Any], rec: JobRecord = rec, problem: str = problem) -> Any:
                return self._quarantine(c, rec, problem)

            poison = self._run(fail, tx=True)
            if poison is not None:
                self.report_quarantined(poison)
        return found

    def _decode(self, row: Sequence[Any]) -> JobRecord:
        """``row`` as a record; a corrupt row reads as failed, naming the field. Never writes."""
        rec, problem = _record(row)
        return rec if problem is None else quarantined(rec, problem, self.clock.now())

    def _quarantine(
        self, c: psycopg.Cursor[Any], rec: JobRecord, problem: str
    ) -> JobRecord | None:
        """Fail a corrupt started row in place, naming the field; other columns stay as found.

        None when the row is no longer started (another maintenance run failed it first).
        """
        now = self.clock.now()
        raw_id = rec.id
        failed = quarantined(rec, problem, now)
        c.execute(
            f"UPDATE {self._sql.s}.jobs SET status = 'failed', exc_info = %s, ended_at = %s, "
            f"expires_at = NULL, pos = nextval('{self._sql.s}.job_pos') "
            "WHERE id = %s AND status = 'started'",
            (_text(quarantine_exc_info(failed.id, problem)), now, raw_id),
        )
        return failed if c.rowcount == 1 else None

    # -- primitives: progress and named values -----------------------------------------

    def set_progress(self, job_id: str, progress: str) -> bool:
        # Its own small table: the job's row is never rewritten (no bloat, no index churn).
        def write(c: psycopg.Cursor[Any]) -> bool:
            c.execute(
                f"INSERT INTO {self._sql.s}.job_progress (job_id, progress) "
                f"SELECT id, %s FROM {self._sql.s}.jobs WHERE id = %s "
                "ON CONFLICT (job_id) DO UPDATE SET progress = EXCLUDED.progress",
                (progress, job_id),
            )
            return c.rowcount == 1

        return self._run(write)

    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        ids = list(job_ids)
        rows = self._run(lambda c: c.execute(
            f"SELECT job_id, progress FROM {self._sql.s}.job_progress WHERE job_id = ANY(%s)",
            (ids,),
        ).fetchall())
        found = dict(rows)
        return [found.get(i) for i in ids]

    def get_value(self, key: str) -> str | None:
        found = self._column(
            f"SELECT value FROM {self._sql.s}.named_values WHERE key = %s", (key,)
        )
        return found[0] if found else None

    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        s = self._sql.s
        if expected is None and new is None:
            return self.get_value(key) is None
        if expected is None:
            sql = (f"INSERT INTO {s}.named_values (key, value) VALUES (%s, %s) "
                   "ON CONFLICT (key) DO NOTHING")
            params: tuple[Any, ...] = (key, new)
        elif new is None:
            sql, params = f"DELETE FROM {s}.named_values WHERE key = %s AND value = %s", (
                key, expected)
        else:
            sql = f"UPDATE {s}.named_values SET value = %s WHERE key = %s AND value = %s"
            params = (new, key, expected)

        def write(c: psycopg.Cursor[Any]) -> bool:
            c.execute(sql, params)
            return c.rowcount == 1

        return self._run(write)

    def values(self, prefix: str) -> dict[str, str]:
        rows = self._run(lambda c: c.execute(
            f"SELECT key, value FROM {self._sql.s}.named_values WHERE left(key, %s) = %s",
            (len(prefix), prefix),
        ).fetchall())
        return dict(rows)

    # -- primitives: workers ----------------------------------------------------------------

    def register_worker(self, worker: WorkerRecord) -> None:
        params = (
            worker.name, list(worker.queues), worker.pid, worker.hostname, worker.birth,
            worker.last_heartbeat, worker.state, worker.current_job_id, worker.successful_jobs,
            worker.failed_jobs,
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in schema.WORKER_COLUMNS[1:])
        query = (
            f"INSERT INTO {self._sql.s}.workers ({_WCOLS}) VALUES "
            f"({', '.join(['%s'] * len(schema.WORKER_COLUMNS))}) "
            f"ON CONFLICT (name) DO UPDATE SET {updates}"
        )
        self._run(lambda c: c.execute(query, params))

    def heartbeat(
        self, name: str, now: float, *, state: str, current_job_id: str | None,
        successful: int = 0, failed: int = 0,
    ) -> None:
        params = (now, state, current_job_id, successful, failed, name)
        self._run(
            lambda c: c.execute(
                f"UPDATE {self._sql.s}.workers SET last_heartbeat = %s, state = %s, "
                "current_job_id = %s, successful_jobs = %s, failed_jobs = %s WHERE name = %s",
                params,
            )
        )

    def unregister_worker(self, name: str) -> None:
        self._run(lambda c: c.execute(f"DELETE FROM {self._sql.s}.workers WHERE name = %s", (name,)))

    def list_workers(self) -> list[WorkerRecord]:
        rows = self._run(
            lambda c: c.execute(
                f"SELECT {_WCOLS} FROM {self._sql.s}.workers ORDER BY birth, name"
            ).fetchall()
        )
        return [_worker(row) for row in rows]

    # -- waiting --------------------------------------------------------------------------

    def _listener(self) -> psycopg.Connection[Any]:
        """This thread's own connection for LISTEN (a pooled one would carry it to others)."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._forget_inherited_connections()
        conn: psycopg.Connection[Any] | None = getattr(self._local, "listener", None)
        if conn is not None and not conn.closed:
            return conn
        conn = psycopg.connect(self.settings.conninfo, autocommit=True)
        me = threading.current_thread()
        with self._lock:
            for thread, other in list(self._listeners.items()):
                if not thread.is_alive():
                    del self._listeners[thread]
                    with contextlib.suppress(Exception):
                        other.close()
            self._listeners[me] = conn
        self._local.listener = conn
        return conn

    def _drop_listener(self) -> None:
        conn = getattr(self._local, "listener", None)
        self._local.listener = None
        with self._lock:
            self._listeners.pop(threading.current_thread(), None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when one of ``queues`` may have a queued job, or after ``timeout`` seconds.

        ``LISTEN`` first, then look at the queues, then sleep on the socket
        until a ``NOTIFY`` naming one of them arrives: a job committed at any
        moment after the ``LISTEN`` wakes the worker, and an idle worker costs
        nothing between notifications. ``UNLISTEN`` at the end, so a busy
        worker's connection does not collect the notifications of every enqueue.
        """
        deadline = time.monotonic() + timeout
        names = list(queues)
        if not names or BOUND.get() is not None:
            time.sleep(max(0.0, timeout))
            return
        ident = schema.quote_ident(self.channel)
        try:
            conn = self._listener()
            conn.execute(f"LISTEN {ident}")
            try:
                if conn.execute(self._sql.any_queued, (names, self.clock.now())).fetchone():
                    return
                wanted = set(names)
                left = deadline - time.monotonic()
                if left > 0:
                    for note in conn.notifies(timeout=left):
                        if note.payload in wanted:
                            return
            finally:
                if not conn.closed:
                    conn.execute(f"UNLISTEN {ident}")
        except psycopg.Error:
            # The server is away: the next claim waits it out with backoff.
            self._drop_listener()
            time.sleep(max(0.0, min(0.5, deadline - time.monotonic())))
