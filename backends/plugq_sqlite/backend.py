"""The storage primitives of :class:`plugq.storage.Storage` on one SQLite file.

Read top to bottom: URL parsing, connections (one per thread and per
process), the retry on a busy database, then one method per primitive. Every
primitive is a single SQL statement in autocommit mode (SQLite takes the
write lock at the start of a writing statement, so a lone ``UPDATE`` is as
atomic as a ``BEGIN IMMEDIATE`` transaction) or, where it needs several
statements, one short ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, ClassVar, NoReturn, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from plugq._quarantine import (
    Unparsable,
    job_problem,
    quarantine_exc_info,
    quarantined,
    quarantined_worker,
    worker_problem,
)
from plugq._validate import is_queue_name
from plugq.config import mask_url
from plugq.exceptions import BackendUnavailableError, ConfigurationError, DuplicateJobError
from plugq.storage import (
    ClaimGate,
    ClaimPeek,
    Clock,
    JobRecord,
    JobStatus,
    Storage,
    UniqueKey,
    WorkerRecord,
)

from . import schema

T = TypeVar("T")


class DatabaseLockedError(BackendUnavailableError):
    """The database stayed locked by other connections for longer than ``busy_timeout``."""


# -- SQL ---------------------------------------------------------------------

_STATUS = {s.value: s for s in JobStatus}
_COLS = ", ".join(schema.JOB_COLUMNS)
_QMARKS = ", ".join("?" * len(schema.JOB_COLUMNS))
_WCOLS = ", ".join(schema.WORKER_COLUMNS)

# Places. ``pos`` is the moment (epoch seconds, strictly increasing within a
# process, see _Positions) a job entered its queue or registry; an at_front job
# takes the negated moment, which sorts before every other job and before
# earlier at_front jobs. Ties between processes fall back to the rowid, the
# index's last column. Computing it in Python rather than as max(pos) + 1 in
# the statement matters: a subquery reading the index that the same UPDATE or
# INSERT writes more than doubles the statement's cost.
_INSERT = f"INSERT OR REPLACE INTO jobs ({_COLS}, pos) VALUES ({_QMARKS}, ?)"

_PUT_SET = ", ".join(f"{c} = ?" for c in schema.JOB_COLUMNS if c not in ("id", "meta"))


def _put_sql(n_expected: int, check_attempts: bool = False) -> str:
    # The right-hand sides of SET read the row as it was, so "origin = ? AND
    # status = ?" asks whether the job stays where it is (then it keeps its
    # place) or moves to another queue or registry (then it takes a new one).
    sql = (
        f"UPDATE jobs SET {_PUT_SET}, pos = CASE WHEN origin = ? AND status = ? THEN pos "
        "ELSE ? END WHERE id = ?"
    )
    if n_expected:
        sql += f" AND status IN ({', '.join('?' * n_expected)})"
    if check_attempts:
        sql += " AND attempts = ?"
    return sql


_PUT_SQL = [_put_sql(n) for n in range(len(JobStatus) + 1)]
_PUT_SQL_ATTEMPTS = [_put_sql(n, check_attempts=True) for n in range(len(JobStatus) + 1)]

# Listings; the _LIVE forms leave out what has expired at the given moment.
_UNEXPIRED = "AND (expires_at IS NULL OR expires_at > ?) "
# ``qrank`` (-priority for a queued row, 0 otherwise) comes before ``pos`` in
# the queue index, so every listing orders by both and reads the index in order.
_IDS = (
    "SELECT id FROM jobs WHERE origin = ? AND status = ? ORDER BY qrank, pos LIMIT ? OFFSET ?"
)
_IDS_LIVE = (
    f"SELECT id FROM jobs WHERE origin = ? AND status = ? {_UNEXPIRED}ORDER BY qrank, pos "
    "LIMIT ? OFFSET ?"
)
_COUNT = "SELECT count(*) FROM jobs WHERE origin = ? AND status = ?"
_COUNT_LIVE = f"SELECT count(*) FROM jobs WHERE origin = ? AND status = ? {_UNEXPIRED}"

# The claim: one statement picks the first unexpired queued row by the queue
# index and marks it started; RETURNING hands back the row as stored.
_CLAIM = (
    "UPDATE jobs SET status = 'started', started_at = ?, worker_name = ?, expires_at = NULL, "
    "attempts = attempts + 1, pos = ? "
    "WHERE rowid = (SELECT rowid FROM jobs WHERE origin = ? AND status = 'queued' "
    f"{_UNEXPIRED}ORDER BY qrank, pos LIMIT 1) "
    f"RETURNING {_COLS}"
)
#: _CLAIM, returning also the named value of a key given last (see SqliteStorage.claim_gated).
_CLAIM_AND_VALUE = _CLAIM + ", (SELECT value FROM named_values WHERE key = ?)"
_GET = f"SELECT {_COLS} FROM jobs WHERE id = ?"
_ANY_QUEUED = "SELECT 1 FROM jobs WHERE origin = ? AND status = 'queued' LIMIT 1"
_GET_MANY_CHUNK = 500


# CPython's sqlite3 binds None through its slow adaptation path (an adapter
# lookup that fails): about 0.28 us per None against 0.05 us for a float. A new
# job row has a dozen NULLs, so that was a quarter of the insert's cost. An
# identity adapter for None makes the lookup hit. It changes nothing for other
# sqlite3 users in the process: None still binds as NULL. Someone else's
# adapter for None is left alone.
if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
    sqlite3.register_adapter(type(None), lambda value: value)


_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT = (
    sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CORRUPT
)
_SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = (
    sqlite3.SQLITE_FULL, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB
)


def _params(r: JobRecord) -> tuple[Any, ...]:
    """A record as a row, in :data:`schema.JOB_COLUMNS` order."""
    return (
        r.id, r.func_name, r.origin, r.payload, r.serializer, r.status.value, r.description,
        r.created_at, r.enqueued_at, r.started_at, r.ended_at, r.timeout, r.result_ttl,
        r.failure_ttl, r.ttl, r.meta, r.result, r.exc_info, r.worker_name, r.retries_left,
        json.dumps(r.retry_intervals) if r.retry_intervals else None,
        json.dumps(r.depends_on) if r.depends_on else None,
        1 if r.allow_dependency_failure else 0, r.on_success, r.on_failure,
        r.scheduled_for, r.expires_at, 1 if r.at_front else 0, r.attempts, r.priority,
        r.unique_key, r.rate_limit, r.pipe,
    )


def _json_list(text: Any) -> Any:
    if not text:
        return []
    try:
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        return Unparsable(f"is not valid JSON ({exc})")


def _flag(value: Any) -> Any:
    return bool(value) if value in (0, 1) else Unparsable(f"is {value!r:.40}, not 0 or 1")


def _record(row: tuple[Any, ...]) -> tuple[JobRecord, str | None]:
    """A row (in :data:`schema.JOB_COLUMNS` order) as a record, and its first unusable field.

    Never raises: whoever can write the file can put anything in a column,
    and one such row must not stop the worker that reads it.
    """
    rec = JobRecord(*row)
    status = _STATUS.get(row[5]) if isinstance(row[5], str) else None
    rec.status = status if status is not None else Unparsable(  # type: ignore[assignment]
        f"{row[5]!r:.40} is not a job status"
    )
    rec.retry_intervals = _json_list(row[20])
    rec.depends_on = _json_list(row[21])
    rec.allow_dependency_failure = _flag(row[22])
    rec.at_front = _flag(row[27])
    return rec, job_problem(rec)


def _put_params(record: JobRecord, conditions: tuple[Any, ...]) -> tuple[Any, ...]:
    """The parameters of a :func:`_put_sql` statement for ``record``."""
    moment = _POSITIONS.next()
    values = _params(record)
    return (
        *values[1:15], *values[16:],  # every column but id and meta
        record.origin, record.status.value,
        -moment if record.at_front and record.status is JobStatus.QUEUED else moment,
        record.id, *conditions,
    )


#: _ClaimValues.read when the claim's statement read no value.
_UNREAD = object()


class _ClaimValues:
    """:class:`~plugq.storage.ClaimValues` on the connection whose transaction holds a claim.

    ``key``/``read``: a named value the claim's own statement read (see
    :meth:`SqliteStorage.claim_gated`), handed out without a statement of its
    own; ``asked``: the last key read by a statement here, the next claim's
    guess.
    """

    __slots__ = ("asked", "conn", "key", "read")

    def __init__(self, conn: sqlite3.Connection, key: str | None = None,
                 read: object = _UNREAD) -> None:
        self.conn = conn
        self.key = key
        self.read = read
        self.asked: str | None = None

    def get_value(self, key: str) -> str | None:
        read = self.read
        if key == self.key and read is not _UNREAD:
            return None if read is None else str(read)
        self.asked = key
        row = self.conn.execute("SELECT value FROM named_values WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_value(self, key: str, value: str) -> None:
        if key == self.key:
            self.read = value  # read again in this transaction (a gate and a peek may both ask)
        # An UPDATE in place first: REPLACE would delete and re-insert the row.
        sql = "UPDATE named_values SET value = ? WHERE key = ?"
        if self.conn.execute(sql, (value, key)).rowcount == 0:
            self.conn.execute("INSERT INTO named_values (key, value) VALUES (?, ?)", (key, value))

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        found: dict[str, JobStatus] = {}
        for start in range(0, len(job_ids), _GET_MANY_CHUNK):
            chunk = job_ids[start:start + _GET_MANY_CHUNK]
            rows = self.conn.execute(
                f"SELECT id, status FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk
            ).fetchall()
            for job_id, status in rows:
                known = _STATUS.get(status) if isinstance(status, str) else None
                if known is not None:  # a corrupt status holds no slot
                    found[job_id] = known
        return found


def _fetchall(sql: str, params: tuple[Any, ...], conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _lists(depends_on: Any, job_id: str) -> bool:
    found = _json_list(depends_on)
    return isinstance(found, Unparsable) or (isinstance(found, list) and job_id in found)


def _worker(row: tuple[Any, ...]) -> WorkerRecord:
    w = WorkerRecord(*row)
    w.queues = _json_list(row[1])
    problem = worker_problem(w)
    return w if problem is None else quarantined_worker(w, problem)


def _bindable(value: Any) -> Any:
    """A value read from the file, in a form the driver can bind again (see _text_factory)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")
    return value


def _text_factory(raw: bytes) -> str:
    # Invalid UTF-8 in a text column would make the driver raise inside the
    # claim; decoded with surrogateescape it reaches the record checks, which
    # quarantine the row and name the column.
    return raw.decode("utf-8", "surrogateescape")


class _Positions:
    """Strictly increasing wall-clock moments for ``pos``, shared by a process's threads."""

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def next(self) -> float:
        with self._lock:
            now = time.time()
            # A float near 1.8e9 resolves ~0.24 us: a microsecond step is exact enough.
            self._last = now if now > self._last else self._last + 1e-6
            return self._last

    def reserve(self, count: int) -> float:
        """The first of ``count`` consecutive moments (one lock for a whole batch)."""
        with self._lock:
            now = time.time()
            first = now if now > self._last else self._last + 1e-6
            self._last = first + (count - 1) * 1e-6
            return first


_POSITIONS = _Positions()


# -- connections ----------------------------------------------------------------


class _Connection(sqlite3.Connection):
    """A connection that remembers the process that opened it."""

    pid: int = 0


# Connections inherited through fork(). They are never used or closed in the
# child: closing one could drop the POSIX locks that the child's own
# connections hold on the same file (SQLite's documented fork hazard).
_ORPHANS: list[sqlite3.Connection] = []
_STORAGES: weakref.WeakSet[SqliteStorage] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held the lock at the moment of fork().
    _POSITIONS._lock = threading.Lock()
    for storage in list(_STORAGES):
        storage._forget_inherited_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- URL -----------------------------------------------------------------------

_FORM = "sqlite:///relative/path.db or sqlite:////absolute/path.db"
_PARAMS = {
    "lease": "a number of seconds > 0, e.g. ?lease=30",
    "busy_timeout": "a number of seconds > 0 to wait for a locked database, e.g. ?busy_timeout=30",
    "synchronous": "normal (default: durable across crashes of the process) or full "
                   "(also across power loss)",
    "mode": "rw (default) or ro: read-only, for monitors and inspection; it never "
            "creates or writes the file",
    "poll": "the longest pause, in seconds > 0, between two looks of an idle worker at the "
            "file, e.g. ?poll=0.005 (default 0.01)",
}


def _positive(url: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise ConfigurationError(
            f"{url}: {key}={value!r} is not valid; {key} must be {_PARAMS[key]}"
        )
    return number


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a ``sqlite:///…`` URL into an absolute file path and its query parameters.

    Raises:
        ConfigurationError: a host part, no path, ``:memory:``, an unknown or
            repeated parameter; the message names it and shows the right form.
    """
    parts = urlsplit(url)
    url = mask_url(url)  # every message below quotes it
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"{url!r} is not a sqlite URL; expected {_FORM}")
    if parts.netloc:
        raise ConfigurationError(
            f"{url!r}: a sqlite URL has no host part ({mask_url(parts.netloc)!r}); use three slashes "
            f"for a relative path and four for an absolute one: {_FORM}"
        )
    path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not path or path.endswith("/"):
        raise ConfigurationError(f"{url!r} names no database file; expected {_FORM}")
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigurationError(
            f"{url!r}: an in-memory SQLite database cannot be shared between threads and "
            f"processes; use memory:// for an in-process store, or {_FORM}"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    params: dict[str, str] = {}
    for key, values in query.items():
        if key not in _PARAMS:
            raise ConfigurationError(
                f"{url}: unknown parameter {key!r}; the sqlite backend accepts "
                + "; ".join(f"{k} ({v})" for k, v in _PARAMS.items())
            )
        if len(values) > 1:
            raise ConfigurationError(f"{url}: parameter {key!r} is given {len(values)} times")
        params[key] = values[0]
    return os.path.abspath(path), params


# -- the storage ---------------------------------------------------------------------


class SqliteStorage(Storage):
    """Jobs, registries and workers in one SQLite file shared by many processes.

    ``sqlite:///PATH[?lease=S&busy_timeout=S&synchronous=normal|full&poll=S&mode=rw|ro]``

    * The file runs in WAL mode, so readers never block the writer, and every
      write is one statement or one short ``BEGIN IMMEDIATE`` transaction.
    * A worker claims a job with one ``UPDATE … RETURNING`` on the queue
      index ``(origin, status, pos)``: exactly one claimer gets each job, in
      O(log n) whatever the queue's length.
    * Each thread and each process gets its own connection (SQLite
      connections must not cross ``fork()``).
    * "database is locked" is waited out (SQLite's busy handler, then a
      retry loop) for up to ``busy_timeout`` seconds, then raised as
      :class:`DatabaseLockedError`.
    * An idle worker's :meth:`wait` polls ``PRAGMA data_version`` — a
      counter in shared memory that changes when another connection commits
      — every 1 to 10 ms, so it reacts in milliseconds without a busy loop.
    """

    scheme: ClassVar[str] = "sqlite"
    #: In one process only: other processes read the wall clock.
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"manual_clock", "priority", "unique_keys", "progress", "values", "pipes",
         "gated_claim"}
    )

    #: Longest pause between two ``data_version`` polls of an idle :meth:`wait`
    #: (the URL's ``poll`` parameter overrides it per backend).
    POLL_MAX = 0.010
    #: First pause after a wake-up; grows by :attr:`POLL_GROWTH` up to :attr:`POLL_MAX`.
    POLL_MIN = 0.001
    POLL_GROWTH = 1.25
    poll_max: float = POLL_MAX

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        schema.check_sqlite_version()
        super().__init__(url, clock)
        self.path, params = parse_url(url)
        shown = self.safe_url()
        self.lease = _positive(shown, "lease", params["lease"]) if "lease" in params else 60.0
        #: Seconds a call waits for a locked database before raising DatabaseLockedError.
        self.busy_timeout = (
            _positive(shown, "busy_timeout", params["busy_timeout"])
            if "busy_timeout" in params else 30.0
        )
        if "poll" in params:
            self.poll_max = _positive(shown, "poll", params["poll"])
        sync = params.get("synchronous", "normal").lower()
        if sync not in ("normal", "full"):
            raise ConfigurationError(
                f"{shown}: synchronous={params['synchronous']!r} is not valid; synchronous must "
                f"be {_PARAMS['synchronous']}"
            )
        self.synchronous = sync.upper()
        mode = params.get("mode", "rw").lower()
        if mode not in ("rw", "ro"):
            raise ConfigurationError(
                f"{shown}: mode={params['mode']!r} is not valid; mode must be {_PARAMS['mode']}"
            )
        #: True with ``?mode=ro``: every write raises BackendUnavailableError.
        self.read_only = mode == "ro"
        #: The named value a claim's statement reads along (see claim_gated):
        #: the key the last gate or peek asked for. Shared by the threads
        #: using this storage; a wrong guess costs only the read it would
        #: have saved.
        self._value_guess: str | None = None
        self._local = threading.local()
        self._pid = os.getpid()
        self._conns_lock = threading.Lock()
        # thread -> its connection; strong references, so a connection is closed
        # here (when its thread has ended) and never by the garbage collector in
        # a forked child.
        self._conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._open()
        _STORAGES.add(self)

    def safe_url(self) -> str:
        """The URL with the file's absolute path, for logs, ``plugq info`` and errors.

        A relative ``sqlite:///plugq.db`` names a different file in every
        working directory; the start line of a worker must say which one.
        """
        query = urlsplit(self.url).query
        return f"sqlite:///{quote(self.path)}" + (f"?{query}" if query else "")

    # -- opening -------------------------------------------------------------------

    def _open(self) -> None:
        """Check the file is ours (or new), then make it a WAL database with our schema."""
        if self.read_only:
            if not os.path.isfile(self.path):
                raise BackendUnavailableError(
                    f"{self.path!r} does not exist; mode=ro opens an existing plugq database "
                    "and never creates one"
                )
        else:
            schema.create_file(self.path)
        schema.check_header(self.path)
        # inspect() only reads: a foreign or newer file is refused before any write.
        try:
            version = self._retry(lambda c: schema.inspect(c, self.path))
        except BaseException:
            self.close()
            raise
        if self.read_only:
            if version != schema.SCHEMA_VERSION:
                self.close()
                raise BackendUnavailableError(
                    f"{self.path!r} is not an initialised plugq database of schema version "
                    f"{schema.SCHEMA_VERSION} (found {version or 'an empty file'}); mode=ro "
                    "cannot create or upgrade it: open it once without mode=ro"
                )
            return
        # WAL is a property of the file; setting it needs a moment of exclusive
        # access, so several processes opening at once may have to retry.
        mode = self._retry(lambda c: c.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if str(mode).lower() != "wal":
            raise BackendUnavailableError(
                f"{self.path!r}: SQLite refused WAL mode (got {mode!r}); the sqlite backend "
                "needs a local file system that supports shared memory (not NFS)"
            )
        if version < schema.SCHEMA_VERSION:
            self._retry(lambda c: schema.migrate(c, self.path))

    def _connect(self) -> sqlite3.Connection:
        pid = os.getpid()
        if pid != self._pid:
            self._forget_inherited_connections()
        # The busy handler waits in SQLite's own sleep steps (1, 2, 5, 10… ms);
        # a longer wait is the retry loop's business, so the per-attempt wait
        # stays short enough for the loop's deadline to mean something.
        target = self.path
        if self.read_only:
            target = f"file:{quote(self.path)}?mode=ro"
        conn = sqlite3.connect(
            target,
            uri=self.read_only,
            timeout=min(self.busy_timeout, 5.0),
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            check_same_thread=False,  # only so close() may close other threads' connections
            factory=_Connection,
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            # REPLACE of a row then fires the delete trigger that drops its dependency rows.
            conn.execute("PRAGMA recursive_triggers = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise BackendUnavailableError(
                f"{self.path!r} is not a usable SQLite database ({exc}); plugq will not touch it"
            ) from None
        conn.text_factory = _text_factory
        conn.pid = pid
        me = threading.current_thread()
        with self._conns_lock:
            for thread, other in list(self._conns.items()):
                if not thread.is_alive():
                    del self._conns[thread]
                    other.close()
            self._conns[me] = conn
        self._local.conn = conn
        self._local.pid = pid
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        return self._connect()

    def _forget_inherited_connections(self) -> None:
        """In a forked child: set the parent's connections aside, unused and unclosed."""
        _ORPHANS.extend(self._conns.values())
        self._conns = {}
        self._conns_lock = threading.Lock()
        self._local = threading.local()
        self._pid = os.getpid()

    def close(self) -> None:
        """Close this process's connections; a later call opens new ones."""
        with self._conns_lock:
            conns = [c for c in self._conns.values() if getattr(c, "pid", None) == self._pid]
            self._conns = {}
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    # -- the busy retry ------------------------------------------------------------------

    def _retry(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)``, retrying while the database is busy, up to ``busy_timeout``.

        Most waiting happens in SQLite's busy handler; this loop covers the
        cases SQLite reports at once (a WAL being recovered or reset, a
        handler wait that ran out while another process checkpoints).
        """
        first: sqlite3.OperationalError | None = None
        deadline = pause = 0.0
        while True:
            conn = self._conn()
            try:
                return fn(conn)
            except sqlite3.OperationalError as exc:
                if not schema.is_busy(exc):
                    self._raise_for(exc)
                if first is None:
                    first, deadline, pause = exc, time.monotonic() + self.busy_timeout, 0.001
            except sqlite3.DatabaseError as exc:
                self._raise_for(exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if time.monotonic() >= deadline:
                raise DatabaseLockedError(
                    f"{self.path!r} stayed locked for more than {self.busy_timeout:g} s "
                    f"({first}); another process holds a long write transaction. Raise "
                    "?busy_timeout=SECONDS in the URL if that is expected."
                ) from first
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.05)

    def _raise_for(self, exc: sqlite3.DatabaseError) -> NoReturn:
        """Re-raise ``exc``, as a BackendUnavailableError when it is about the file."""
        translated = self._unavailable(exc)
        if translated is None:
            raise exc
        raise translated from exc

    def _unavailable(self, exc: sqlite3.DatabaseError) -> BackendUnavailableError | None:
        """The plugq error for a file that cannot take the call (full, read-only, damaged)."""
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == _SQLITE_FULL:
            why = ("the disk (or the file's size limit) is full; nothing of this call was "
                   "written. Free some space and retry")
        elif code == _SQLITE_READONLY:
            why = ("the database is opened read-only (?mode=ro)" if self.read_only else
                   "the database is read-only: check the permissions of the file, its -wal "
                   "and -shm files and its folder")
        elif code == _SQLITE_IOERR:
            why = "the disk reported an I/O error"
        elif code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            why = "the file is damaged; restore it from a backup (PRAGMA integrity_check)"
        elif code == _SQLITE_CANTOPEN:
            why = "the file (or its -wal/-shm companions) cannot be opened"
        else:
            return None
        return BackendUnavailableError(f"{self.path!r}: {why} ({exc})")

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one ``BEGIN IMMEDIATE`` transaction (the write lock up front)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    # -- primitives: jobs ------------------------------------------------------------------

    def insert(
        self, records: Sequence[JobRecord], *, unique_ids: Collection[str] = (),
        unique_keys: Sequence[UniqueKey] = (),
    ) -> None:
        if not records:
            return
        first = _POSITIONS.reserve(len(records))
        queued = JobStatus.QUEUED
        rows = [
            (*_params(rec), -moment if rec.at_front and rec.status is queued else moment)
            for rec, moment in zip(records, [first + i * 1e-6 for i in range(len(records))],
                                   strict=True)
        ]
        deps = [(rec.id, dep) for rec in records for dep in rec.depends_on]
        if len(rows) == 1 and not deps and not unique_ids and not unique_keys:
            # The common enqueue: one statement, atomic on its own.
            row = rows[0]
            self._retry(lambda c: c.execute(_INSERT, row))
            return

        def body(c: sqlite3.Connection) -> None:
            if unique_ids:
                self._check_unique(c, list(unique_ids))
            for cond in unique_keys:
                self._check_unique_key(c, cond)
            c.executemany(_INSERT, rows)
            if deps:
                c.executemany(
                    "INSERT OR IGNORE INTO job_dependencies (job_id, depends_on) VALUES (?, ?)",
                    deps,
                )

        self._retry(lambda c: self._write(c, body))

    @staticmethod
    def _check_unique(c: sqlite3.Connection, ids: list[str]) -> None:
        for start in range(0, len(ids), _GET_MANY_CHUNK):
            chunk = ids[start:start + _GET_MANY_CHUNK]
            row = c.execute(
                f"SELECT id, status FROM jobs WHERE id IN ({', '.join('?' * len(chunk))}) "
                "AND status IN ('queued', 'started') LIMIT 1",
                chunk,
            ).fetchone()
            if row is not None:
                raise DuplicateJobError(f"Job {row[0]} is already {row[1]}", job_id=row[0])

    @staticmethod
    def _check_unique_key(c: sqlite3.Connection, cond: UniqueKey) -> None:
        # Under BEGIN IMMEDIATE: a racing insert of the same key waits for the
        # write lock and then sees this one's row.
        statuses = [s.value for s in cond.statuses]
        if not statuses:
            return
        row = c.execute(
            f"SELECT id, status FROM jobs WHERE unique_key = ? "
            f"AND status IN ({', '.join('?' * len(statuses))}) "
            "AND (? IS NULL OR created_at > ?) ORDER BY created_at DESC LIMIT 1",
            (cond.key, *statuses, cond.since, cond.since),
        ).fetchone()
        if row is not None:
            raise DuplicateJobError(
                f"Job {row[0]} holds unique key {cond.key!r} ({row[1]})", job_id=row[0]
            )

    def get(self, job_id: str) -> JobRecord | None:
        row = self._retry(lambda c: c.execute(_GET, (job_id,)).fetchone())
        return None if row is None else self._decode(row)

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        found: dict[str, JobRecord] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), _GET_MANY_CHUNK):
            chunk = ids[start:start + _GET_MANY_CHUNK]
            sql = f"SELECT {_COLS} FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})"

            def read(c: sqlite3.Connection, sql: str = sql, chunk: list[str] = chunk) -> list[Any]:
                return c.execute(sql, chunk).fetchall()

            for row in self._retry(read):
                found[row[0]] = self._decode(row)
        return [found.get(job_id) for job_id in ids]

    def put(
        self, record: JobRecord, *, expected: Collection[JobStatus] | None = None,
        expected_attempts: int | None = None,
    ) -> bool:
        statuses = () if expected is None else tuple(s.value for s in expected)
        if expected is not None and not statuses:
            return False
        conditions: tuple[Any, ...] = statuses
        if expected_attempts is not None:
            sql = _PUT_SQL_ATTEMPTS[len(statuses)]
            conditions = (*statuses, expected_attempts)
        else:
            sql = _PUT_SQL[len(statuses)]
        params = _put_params(record, conditions)
        if not record.depends_on:
            return bool(self._retry(lambda c: c.execute(sql, params).rowcount) == 1)

        def body(c: sqlite3.Connection) -> bool:
            if c.execute(sql, params).rowcount != 1:
                return False
            c.execute("DELETE FROM job_dependencies WHERE job_id = ?", (record.id,))
            c.executemany(
                "INSERT OR IGNORE INTO job_dependencies (job_id, depends_on) VALUES (?, ?)",
                [(record.id, dep) for dep in record.depends_on],
            )
            return True

        return self._retry(lambda c: self._write(c, body))

    def remove(self, job_id: str) -> bool:
        n = self._retry(lambda c: c.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount)
        return bool(n)

    def set_meta(self, job_id: str, meta: bytes) -> bool:
        n = self._retry(
            lambda c: c.execute("UPDATE jobs SET meta = ? WHERE id = ?", (meta, job_id)).rowcount
        )
        return bool(n)

    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        for name in queues:
            params = (now, worker_name, _POSITIONS.next(), name, now)
            # fetchall() runs the statement to completion, which ends its
            # implicit transaction (a half-read RETURNING would keep the lock).
            while True:
                rows = self._retry(partial(_fetchall, _CLAIM, params))
                if not rows:
                    break
                rec = self._decode(rows[0], store=True)
                if rec.status is JobStatus.STARTED:
                    return rec
                # A poison record was quarantined: take the next job instead.
                params = (now, worker_name, _POSITIONS.next(), name, now)
        return None

    def claim_gated(
        self, queues: Sequence[str], worker_name: str, now: float, gate: ClaimGate,
        peek: ClaimPeek | None = None,
    ) -> JobRecord | None:
        # One BEGIN IMMEDIATE around the claim, the gate's reads and writes of
        # the key and the refused record: a limited job costs the one commit
        # a plain claim costs, instead of a claim, a read and a compare-and-set.
        refused_sql = _PUT_SQL_ATTEMPTS[1]

        def body(name: str, c: sqlite3.Connection) -> JobRecord | None:
            params = (now, worker_name, _POSITIONS.next(), name, now)
            guess = self._value_guess
            values: _ClaimValues | None = None
            if guess is None:
                rows = c.execute(_CLAIM, params).fetchall()
            else:
                # The claim's statement also reads the value the last claim's
                # gate or peek read (the limit key of the jobs of this queue,
                # as a rule): their read then costs no statement of its own.
                rows = c.execute(_CLAIM_AND_VALUE, (*params, guess)).fetchall()
                if rows:
                    row = rows[0]
                    values = _ClaimValues(c, guess, row[-1])
                    rows = [row[:-1]]
            if peek is not None:
                values = values or _ClaimValues(c)
                peek(values)
            rec = self._decode(rows[0], store=True) if rows else None
            if rec is not None and rec.status is JobStatus.STARTED and rec.rate_limit is not None:
                claimed = rec.attempts
                values = values or _ClaimValues(c)
                # The clock read now, under the write lock: a start counted
                # at ``now`` (taken before BEGIN IMMEDIATE waited for the
                # lock) would leave its period early by that wait.
                if not gate(rec, values, self.clock.now()):
                    c.execute(refused_sql, _put_params(rec, (JobStatus.STARTED.value, claimed)))
            self._guess_from(values)
            return rec

        for name in queues:
            while True:
                rec = self._retry(partial(self._write, body=partial(body, name)))
                if rec is None:
                    break
                if rec.status is not JobStatus.FAILED:
                    return rec
                # A poison record was quarantined: take the next job instead.
        return None

    def _guess_from(self, values: _ClaimValues | None) -> None:
        # A key read by a statement of its own becomes the next claims' guess;
        # one read from the claim's statement stays the guess.
        if values is not None and values.asked is not None:
            self._value_guess = values.asked

    # -- primitives: listings -------------------------------------------------------------

    def ids(
        self, queue: str, status: JobStatus, offset: int = 0, length: int = -1, *,
        now: float | None = None,
    ) -> list[str]:
        limits = (length if length >= 0 else -1, max(offset, 0))
        params: tuple[Any, ...]
        if now is None:
            sql, params = _IDS, (queue, status.value, *limits)
        else:
            sql, params = _IDS_LIVE, (queue, status.value, now, *limits)
        rows = self._retry(partial(_fetchall, sql, params))
        return [row[0] for row in rows]

    def count_status(self, queue: str, status: JobStatus, *, now: float | None = None) -> int:
        params: tuple[Any, ...]
        if now is None:
            sql, params = _COUNT, (queue, status.value)
        else:
            sql, params = _COUNT_LIVE, (queue, status.value, now)
        return int(self._retry(partial(_fetchall, sql, params))[0][0])

    def queues(self) -> list[str]:
        # A skip scan of the queue index: one descent per distinct name instead
        # of reading every row as SELECT DISTINCT would.
        def scan(c: sqlite3.Connection) -> list[str]:
            names: list[str] = []
            last = ""
            while True:
                row = c.execute("SELECT min(origin) FROM jobs WHERE origin > CAST(? AS TEXT)",
                                (_bindable(last),)).fetchone()
                if row[0] is None:
                    return names
                last = row[0]
                # A name planted outside the queue-name rule (a blob, invalid
                # UTF-8) names no queue anyone can use; its jobs are
                # quarantined when read.
                if is_queue_name(last):
                    names.append(last)

        return self._retry(scan)

    def remove_queued(self, queue: str) -> int:
        return int(
            self._retry(
                lambda c: c.execute(
                    "DELETE FROM jobs WHERE origin = ? AND status = 'queued'", (queue,)
                ).rowcount
            )
        )

    def due(self, now: float, limit: int = 100) -> list[str]:
        rows = self._retry(
            lambda c: c.execute(
                "SELECT id FROM jobs WHERE status = 'scheduled' AND scheduled_for <= ? "
                "ORDER BY scheduled_for, id LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [row[0] for row in rows]

    def expired(self, now: float, limit: int = 100) -> list[str]:
        rows = self._retry(
            lambda c: c.execute(
                "SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [row[0] for row in rows]

    def dependents(self, job_id: str) -> list[str]:
        rows = self._retry(
            lambda c: c.execute(
                "SELECT j.id, j.depends_on FROM job_dependencies d JOIN jobs j ON j.id = d.job_id "
                "WHERE d.depends_on = ? AND j.status = 'deferred'",
                (job_id,),
            ).fetchall()
        )
        # The row's own list is the truth; the side table only finds candidates.
        # A corrupt list is left for get() to quarantine: still a candidate.
        return [row[0] for row in rows if row[1] and _lists(row[1], job_id)]

    def started_by_dead_workers(self, now: float, exclude: str | None = None) -> list[JobRecord]:
        cols = ", ".join(f"j.{c}" for c in schema.JOB_COLUMNS)
        rows = self._retry(
            lambda c: c.execute(
                f"SELECT {cols} FROM jobs j LEFT JOIN workers w ON w.name = j.worker_name "
                "WHERE j.status = 'started' AND j.worker_name IS NOT ? "
                "AND (w.name IS NULL OR w.last_heartbeat + ? <= ?) ORDER BY j.pos",
                (exclude, self.lease, now),
            ).fetchall()
        )
        # Called by maintenance, which writes what it finds: a corrupt started
        # row is failed in the file here rather than listed.
        found = (self._decode(row, store=True) for row in rows)
        return [rec for rec in found if rec.status is JobStatus.STARTED]

    def _decode(self, row: tuple[Any, ...], *, store: bool = False) -> JobRecord:
        """``row`` as a record; a corrupt row reads as failed, naming the field.

        Reads never write: only the primitives that write anyway (``claim``,
        and the recovery listing the engine's maintenance acts on) pass
        ``store`` and fail the row in the file.
        """
        rec, problem = _record(row)
        if problem is None:
            return rec
        if not store:
            return quarantined(rec, problem, self.clock.now())
        return self._quarantine(rec, problem, row[0])

    def _quarantine(self, rec: JobRecord, problem: str, raw_id: Any) -> JobRecord:
        """Fail a corrupt job row in place, naming the field; every other column stays as found."""
        now = self.clock.now()
        failed = quarantined(rec, problem, now)
        if not self.read_only:
            params = (quarantine_exc_info(failed.id, problem), now, _POSITIONS.next(),
                      _bindable(raw_id))
            self._retry(
                lambda c: c.execute(
                    "UPDATE jobs SET status = 'failed', exc_info = ?, ended_at = ?, "
                    "expires_at = NULL, pos = ? WHERE id = CAST(? AS TEXT) OR id = ?4",
                    params,
                )
            )
            self.report_quarantined(failed)
        return failed

    # -- primitives: progress and named values -----------------------------------------

    def set_progress(self, job_id: str, progress: str) -> bool:
        # One small row in its own table: the job's row (and its indexes) stay untouched.
        def write(c: sqlite3.Connection) -> bool:
            return bool(c.execute(
                "INSERT OR REPLACE INTO job_progress (job_id, progress) "
                "SELECT id, ? FROM jobs WHERE id = ?",
                (progress, job_id),
            ).rowcount)

        return self._retry(write)

    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        found: dict[str, str] = {}
        ids = list(job_ids)
        for start in range(0, len(ids), _GET_MANY_CHUNK):
            chunk = ids[start:start + _GET_MANY_CHUNK]
            sql = (f"SELECT job_id, progress FROM job_progress WHERE job_id IN "
                   f"({', '.join('?' * len(chunk))})")
            found.update(self._retry(partial(_fetchall, sql, tuple(chunk))))
        return [found.get(i) for i in ids]

    def get_value(self, key: str) -> str | None:
        rows = self._retry(
            partial(_fetchall, "SELECT value FROM named_values WHERE key = ?", (key,))
        )
        return rows[0][0] if rows else None

    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        if expected is None and new is None:
            return self.get_value(key) is None
        params: tuple[Any, ...]
        if expected is None:
            sql, params = "INSERT OR IGNORE INTO named_values (key, value) VALUES (?, ?)", (key, new)
        elif new is None:
            sql, params = "DELETE FROM named_values WHERE key = ? AND value = ?", (key, expected)
        else:
            sql = "UPDATE named_values SET value = ? WHERE key = ? AND value = ?"
            params = (new, key, expected)
        return bool(self._retry(lambda c: c.execute(sql, params).rowcount) == 1)

    def values(self, prefix: str) -> dict[str, str]:
        rows = self._retry(partial(
            _fetchall, "SELECT key, value FROM named_values WHERE substr(key, 1, ?) = ?",
            (len(prefix), prefix),
        ))
        return dict(rows)

    # -- primitives: workers ----------------------------------------------------------------

    def register_worker(self, worker: WorkerRecord) -> None:
        params = (
            worker.name, json.dumps(list(worker.queues)), worker.pid, worker.hostname,
            worker.birth, worker.last_heartbeat, worker.state, worker.current_job_id,
            worker.successful_jobs, worker.failed_jobs,
        )
        self._retry(
            lambda c: c.execute(
                f"INSERT OR REPLACE INTO workers ({_WCOLS}) VALUES "
                f"({', '.join('?' * len(schema.WORKER_COLUMNS))})",
                params,
            )
        )

    def heartbeat(
        self, name: str, now: float, *, state: str, current_job_id: str | None,
        successful: int = 0, failed: int = 0,
    ) -> None:
        params = (now, state, current_job_id, successful, failed, name)
        self._retry(
            lambda c: c.execute(
                "UPDATE workers SET last_heartbeat = ?, state = ?, current_job_id = ?, "
                "successful_jobs = ?, failed_jobs = ? WHERE name = ?",
                params,
            )
        )

    def unregister_worker(self, name: str) -> None:
        self._retry(lambda c: c.execute("DELETE FROM workers WHERE name = ?", (name,)))

    def list_workers(self) -> list[WorkerRecord]:
        rows = self._retry(
            lambda c: c.execute(f"SELECT {_WCOLS} FROM workers ORDER BY birth, name").fetchall()
        )
        return [_worker(row) for row in rows]

    # -- waiting --------------------------------------------------------------------------

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Return when one of ``queues`` has a queued job, or after ``timeout`` seconds.

        Polls ``PRAGMA data_version``: reading it costs a few microseconds
        (shared memory, no disk I/O) and it changes whenever another
        connection commits. Only then is the queue index consulted. The pause
        between polls starts at :attr:`POLL_MIN` after a change and grows to
        :attr:`POLL_MAX` (``?poll=``), so an idle worker costs under 1% of a core and
        notices new work within a few milliseconds.
        """
        deadline = time.monotonic() + timeout
        names = list(queues)

        def has_work(c: sqlite3.Connection) -> bool:
            return any(c.execute(_ANY_QUEUED, (name,)).fetchone() for name in names)

        def version(c: sqlite3.Connection) -> int:
            return int(c.execute("PRAGMA data_version").fetchone()[0])

        seen = self._retry(version)
        if self._retry(has_work):
            return
        pause = self.POLL_MIN
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(pause, left))
            current = self._retry(version)
            if current != seen:
                seen = current
                if self._retry(has_work):
                    return
                # Something else changed (a heartbeat, a result): a burst of
                # work is likely near, so look often again for a while.
                pause = self.POLL_MIN
            else:
                pause = min(pause * self.POLL_GROWTH, self.poll_max)


#: The name this storage had before plugq.storage existed.
SqliteBackend = SqliteStorage
