"""The SQLite file: its schema, its version, and the checks made before touching it.

A plugq database is recognised by two header fields SQLite reserves for
exactly this: ``PRAGMA application_id`` (:data:`APPLICATION_ID`) and
``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). A file is only ever written
to after :func:`inspect` has said it is either empty (a brand-new file) or a
plugq database of a version this code knows; anything else — a text file, a
foreign SQLite database, a plugq database from a newer release — is refused
with :class:`~plugq.exceptions.BackendUnavailableError` and left as it was.
"""

from __future__ import annotations

import os
import sqlite3

from plugq.exceptions import BackendUnavailableError

#: ``PRAGMA application_id`` of every plugq database: the bytes ``plgq``.
APPLICATION_ID = 0x706C6771
#: ``PRAGMA user_version``: bump and add a step to :data:`MIGRATIONS` when the schema changes.
SCHEMA_VERSION = 2
#: RETURNING (used by the one-statement claim) arrived in SQLite 3.35.
MIN_SQLITE = (3, 35, 0)

_MAGIC = b"SQLite format 3\x00"

# Column order is JobRecord's field order, so a row becomes a record positionally.
JOB_COLUMNS = (
    "id", "func_name", "origin", "payload", "serializer", "status", "description",
    "created_at", "enqueued_at", "started_at", "ended_at", "timeout", "result_ttl",
    "failure_ttl", "ttl", "meta", "result", "exc_info", "worker_name", "retries_left",
    "retry_intervals", "depends_on", "allow_dependency_failure", "on_success", "on_failure",
    "scheduled_for", "expires_at", "at_front", "attempts", "priority", "unique_key",
    "rate_limit", "pipe",
)

WORKER_COLUMNS = (
    "name", "queues", "pid", "hostname", "birth", "last_heartbeat", "state",
    "current_job_id", "successful_jobs", "failed_jobs",
)

# ``pos`` orders the rows of one (origin, status): for queued jobs it is the
# queue order, for every other status the order the job entered that
# registry. It is the moment of entry in epoch seconds, negated for an
# at_front job so that it sorts first. The index on (origin, status, pos)
# makes the claim, the registry listings and the counts one B-tree descent
# (plus the rows read), whatever the table's size.
SCHEMA_V1 = """
CREATE TABLE jobs (
    id TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    pos REAL NOT NULL,
    func_name TEXT NOT NULL,
    payload BLOB NOT NULL,
    serializer TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at REAL,
    enqueued_at REAL,
    started_at REAL,
    ended_at REAL,
    timeout REAL,
    result_ttl INTEGER NOT NULL,
    failure_ttl INTEGER NOT NULL,
    ttl INTEGER,
    meta BLOB NOT NULL,
    result BLOB,
    exc_info TEXT,
    worker_name TEXT,
    retries_left INTEGER,
    retry_intervals TEXT,
    depends_on TEXT,
    allow_dependency_failure INTEGER NOT NULL,
    on_success TEXT,
    on_failure TEXT,
    scheduled_for REAL,
    expires_at REAL,
    at_front INTEGER NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX jobs_by_status ON jobs (origin, status, pos);
CREATE INDEX jobs_due ON jobs (scheduled_for) WHERE status = 'scheduled';
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX jobs_started ON jobs (worker_name) WHERE status = 'started';

-- One row per (job, job it waits for): finding a job's dependents is an index
-- lookup instead of a scan of every deferred job's depends_on list.
CREATE TABLE job_dependencies (
    job_id TEXT NOT NULL,
    depends_on TEXT NOT NULL,
    PRIMARY KEY (job_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX job_dependencies_by_parent ON job_dependencies (depends_on);

-- Fires on DELETE and, with recursive_triggers on, on INSERT OR REPLACE.
CREATE TRIGGER jobs_forget_dependencies AFTER DELETE ON jobs
WHEN old.depends_on IS NOT NULL
BEGIN
    DELETE FROM job_dependencies WHERE job_id = old.id;
END;

CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    queues TEXT NOT NULL,
    pid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    birth REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    state TEXT NOT NULL,
    current_job_id TEXT,
    successful_jobs INTEGER NOT NULL,
    failed_jobs INTEGER NOT NULL
);
"""

# Version 2: priorities, unique keys, progress and named values.
#
# ``qrank`` is -priority for a queued row and 0 for every other one, and the
# queue index becomes (origin, status, qrank, pos): the claim reads the
# highest priority first and still descends the index once; every other
# status lists in ``pos`` order as before, since its qrank is constant. A
# VIRTUAL generated column costs no storage and no write of its own.
# Progress and named values live in their own small tables, so reporting
# progress never rewrites a job's row.
SCHEMA_V2 = """
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN rate_limit TEXT;
ALTER TABLE jobs ADD COLUMN pipe TEXT;
ALTER TABLE jobs ADD COLUMN qrank INTEGER
    GENERATED ALWAYS AS (CASE WHEN status = 'queued' THEN -priority ELSE 0 END) VIRTUAL;
DROP INDEX jobs_by_status;
CREATE INDEX jobs_by_status ON jobs (origin, status, qrank, pos);
CREATE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL;

CREATE TABLE job_progress (
    job_id TEXT PRIMARY KEY,
    progress TEXT NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER jobs_forget_progress AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_progress WHERE job_id = old.id;
END;

CREATE TABLE named_values (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

#: Statements that bring a database from version ``n - 1`` to ``n`` (index ``n``).
MIGRATIONS: dict[int, str] = {1: SCHEMA_V1, 2: SCHEMA_V2}


def check_sqlite_version() -> None:
    """Refuse an SQLite library too old for the statements used here.

    Raises:
        BackendUnavailableError: naming the found and required versions.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        need = ".".join(map(str, MIN_SQLITE))
        raise BackendUnavailableError(
            f"the sqlite backend needs SQLite >= {need} (for UPDATE … RETURNING); "
            f"this Python links SQLite {sqlite3.sqlite_version}"
        )


def create_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists.

    SQLite gives the ``-wal`` and ``-shm`` files it creates later the mode of
    the database file, so they end up owner-only as well.

    Raises:
        BackendUnavailableError: the folder does not exist or is not writable.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot create the SQLite database {path!r}: {exc.strerror} "
            "(does its folder exist and is it writable?)"
        ) from None
    os.close(fd)


def check_header(path: str) -> None:
    """Refuse a non-empty file that is not an SQLite database, without opening it in SQLite.

    Raises:
        BackendUnavailableError: the file is not a database.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_MAGIC))
    except OSError as exc:
        raise BackendUnavailableError(f"cannot read {path!r}: {exc.strerror}") from None
    if head and head != _MAGIC:
        raise BackendUnavailableError(
            f"{path!r} is not a plugq database (not an SQLite file at all); "
            "plugq will not touch it: point the sqlite:/// URL at a new or a plugq file"
        )


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """True for "database is locked/busy": a moment to wait out, not a fault of the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    msg = str(exc)
    return "locked" in msg or "busy" in msg


def inspect(conn: sqlite3.Connection, path: str) -> int:
    """Classify an open database without writing to it.

    The header fields and the table list are read in one read transaction,
    so from one snapshot of the file. Read one by one in autocommit mode they
    could straddle another process's schema creation — ``application_id``
    read before its commit, the tables after — and a half-made plugq file
    would look like another application's. Inside a transaction the caller
    already opened (:func:`migrate`'s ``BEGIN IMMEDIATE``) that transaction's
    snapshot is used.

    Returns:
        0 for an empty database (safe to create the schema in), else the
        plugq schema version found (1 .. :data:`SCHEMA_VERSION`).

    Raises:
        BackendUnavailableError: a foreign or damaged database, or a newer plugq schema.
        sqlite3.OperationalError: the database is busy (for the caller's retry loop).
    """
    own = not conn.in_transaction
    try:
        if own:
            conn.execute("BEGIN")
        try:
            app_id, version, tables = _read_header(conn)
        finally:
            if own and conn.in_transaction:
                conn.execute("COMMIT")  # nothing written: this only ends the snapshot
    except sqlite3.OperationalError as exc:
        if is_busy(exc):
            raise
        raise _unusable(path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, exc) from None
    if app_id == 0 and version == 0 and not tables:
        return 0
    if app_id != APPLICATION_ID:
        raise BackendUnavailableError(
            f"{path!r} is an SQLite database of another application "
            f"(application_id={app_id:#x}, tables: {', '.join(sorted(tables)[:5]) or 'none'}); "
            "plugq will not add its tables to it: use a separate file"
        )
    if version > SCHEMA_VERSION:
        raise BackendUnavailableError(
            f"{path!r} has plugq schema version {version}, newer than this plugq "
            f"understands ({SCHEMA_VERSION}); upgrade plugq (pip install -U plugq)"
        )
    if version < 1:
        raise BackendUnavailableError(
            f"{path!r} is marked as plugq but has no schema version; it is damaged"
        )
    return int(version)


def _read_header(conn: sqlite3.Connection) -> tuple[int, int, list[str]]:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = [
        row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
    ]
    return int(app_id), int(version), tables


def _unusable(path: str, exc: sqlite3.DatabaseError) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"{path!r} is not a usable SQLite database ({exc}); plugq will not touch it"
    )


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create or upgrade the schema inside one ``BEGIN IMMEDIATE`` transaction.

    Safe when several processes open a new file at once: the write lock
    serialises them, each one re-inspects the file under it (a version read
    before taking the lock may be stale), and the whole schema with its
    ``application_id`` and ``user_version`` commits at once, so no reader
    ever sees part of it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = inspect(conn, path)
        for step in range(version + 1, SCHEMA_VERSION + 1):
            _run_script(conn, MIGRATIONS[step])
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction first; running the
    # statements one by one keeps the whole migration atomic.
    for statement in _split_statements(script):
        conn.execute(statement)


def _split_statements(script: str) -> list[str]:
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
