"""The PostgreSQL schema plugq keeps its tables in, its version, and the checks made first.

Everything lives in one PostgreSQL schema (``?schema=``, default ``plugq``).
Its table ``plugq_schema`` holds the version of the layout. A schema is only
written to after :func:`inspect` has said it is either absent or empty (then
plugq creates it) or a plugq schema of a version this code knows; a schema of
another application, or one a newer plugq made, is refused with
:class:`~plugq.exceptions.BackendUnavailableError` and left as it was.

Creation and upgrades run in one transaction under an advisory lock, so
several processes opening a new database at once create it exactly once.
"""

from __future__ import annotations

from typing import Any

from plugq.exceptions import BackendUnavailableError

#: Bump and add a step to :func:`migrations` when the layout changes.
SCHEMA_VERSION = 3

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


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier (names are validated to ``[a-z_][a-z0-9_]*`` first)."""
    return '"' + name.replace('"', '""') + '"'


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema; the payload of a notification is a queue name."""
    return f"plugq_{schema}"


# ``pos`` orders the rows of one (origin, status): for queued jobs it is the
# queue order, for every other status the order the job entered that registry.
# It comes from a sequence (no clocks compared across machines) and is negated
# for an at_front job, which then sorts before every other job and before
# earlier at_front ones. The index on (origin, status, pos) makes the claim,
# the registry listings and the counts one B-tree descent.
#
# The claim is a function so that a worker serving several queues takes from
# them in order in one round trip; each step is one UPDATE of the row that
# ``FOR UPDATE SKIP LOCKED`` picked off the index, so concurrent claimers never
# wait on each other and never take the same row.
_V1 = """
CREATE SEQUENCE {s}.job_pos;

CREATE TABLE {s}.jobs (
    id text PRIMARY KEY,
    func_name text NOT NULL,
    origin text NOT NULL,
    payload bytea NOT NULL,
    serializer text NOT NULL,
    status text NOT NULL,
    description text NOT NULL,
    created_at double precision,
    enqueued_at double precision,
    started_at double precision,
    ended_at double precision,
    timeout double precision,
    result_ttl bigint NOT NULL,
    failure_ttl bigint NOT NULL,
    ttl bigint,
    meta bytea NOT NULL,
    result bytea,
    exc_info text,
    worker_name text,
    retries_left integer,
    retry_intervals double precision[],
    depends_on text[],
    allow_dependency_failure boolean NOT NULL,
    on_success text,
    on_failure text,
    scheduled_for double precision,
    expires_at double precision,
    at_front boolean NOT NULL,
    attempts integer NOT NULL,
    pos bigint NOT NULL
);
CREATE INDEX jobs_by_status ON {s}.jobs (origin, status, pos);
CREATE INDEX jobs_due ON {s}.jobs (scheduled_for) WHERE status = 'scheduled';
CREATE INDEX jobs_expiry ON {s}.jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX jobs_started ON {s}.jobs (worker_name) WHERE status = 'started';
CREATE INDEX jobs_deferred ON {s}.jobs USING gin (depends_on) WHERE status = 'deferred';

CREATE TABLE {s}.workers (
    name text PRIMARY KEY,
    queues text[] NOT NULL,
    pid integer NOT NULL,
    hostname text NOT NULL,
    birth double precision NOT NULL,
    last_heartbeat double precision NOT NULL,
    state text NOT NULL,
    current_job_id text,
    successful_jobs integer NOT NULL,
    failed_jobs integer NOT NULL
);

CREATE FUNCTION {s}.claim(p_queues text[], p_worker text, p_now double precision)
RETURNS SETOF {s}.jobs LANGUAGE plpgsql AS $body$
DECLARE
    q text;
    r {s}.jobs;
BEGIN
    FOREACH q IN ARRAY p_queues LOOP
        UPDATE {s}.jobs j
        SET status = 'started', started_at = p_now, worker_name = p_worker,
            expires_at = NULL, attempts = j.attempts + 1, pos = nextval('{s}.job_pos')
        WHERE j.id = (
            SELECT c.id FROM {s}.jobs c
            WHERE c.origin = q AND c.status = 'queued'
              AND (c.expires_at IS NULL OR c.expires_at > p_now)
            ORDER BY c.pos LIMIT 1
            FOR UPDATE SKIP LOCKED)
        RETURNING j.* INTO r;
        IF FOUND THEN
            RETURN NEXT r;
            RETURN;
        END IF;
    END LOOP;
END
$body$;
"""


# Version 2: priorities, unique keys, progress and named values. ``qrank`` is
# -priority for a queued row and 0 for any other, and the queue index becomes
# (origin, status, qrank, pos): the claim takes the highest priority first and
# is still one descent of the index; other statuses keep listing in pos order.
# Progress and named values have their own tables, so reporting progress never
# rewrites (and never bloats) a job's row.
_V2 = """
ALTER TABLE {s}.jobs ADD COLUMN priority integer NOT NULL DEFAULT 0,
    ADD COLUMN unique_key text,
    ADD COLUMN rate_limit text,
    ADD COLUMN pipe text,
    ADD COLUMN qrank integer
        GENERATED ALWAYS AS (CASE WHEN status = 'queued' THEN -priority ELSE 0 END) STORED;
DROP INDEX {s}.jobs_by_status;
CREATE INDEX jobs_by_status ON {s}.jobs (origin, status, qrank, pos);
CREATE INDEX jobs_unique_key ON {s}.jobs (unique_key) WHERE unique_key IS NOT NULL;

CREATE TABLE {s}.job_progress (
    job_id text PRIMARY KEY REFERENCES {s}.jobs (id) ON DELETE CASCADE,
    progress text NOT NULL
);

CREATE TABLE {s}.named_values (
    key text PRIMARY KEY,
    value text NOT NULL
);

DROP FUNCTION {s}.claim(text[], text, double precision);
CREATE FUNCTION {s}.claim(p_queues text[], p_worker text, p_now double precision)
RETURNS SETOF {s}.jobs LANGUAGE plpgsql AS $body$
DECLARE
    q text;
    r {s}.jobs;
BEGIN
    FOREACH q IN ARRAY p_queues LOOP
        UPDATE {s}.jobs j
        SET status = 'started', started_at = p_now, worker_name = p_worker,
            expires_at = NULL, attempts = j.attempts + 1, pos = nextval('{s}.job_pos')
        WHERE j.id = (
            SELECT c.id FROM {s}.jobs c
            WHERE c.origin = q AND c.status = 'queued'
              AND (c.expires_at IS NULL OR c.expires_at > p_now)
            ORDER BY c.qrank, c.pos LIMIT 1
            FOR UPDATE SKIP LOCKED)
        RETURNING j.* INTO r;
        IF FOUND THEN
            RETURN NEXT r;
            RETURN;
        END IF;
    END LOOP;
END
$body$;
"""


# Version 3: no statement raises on a value the columns admit. An ``attempts``
# of 2**31 - 1 made ``attempts + 1`` overflow inside the claim, and that one
# row at the head of a queue stopped every claim on it; it now keeps its count
# (the claim writes the field itself, as it does started_at). A priority of
# -2**31 (which the API accepts) made ``-priority`` overflow when the row was
# queued, so it could be neither enqueued nor promoted: qrank now clamps it
# (-2**31 sorts with -2**31 + 1). Dropping and adding the generated column
# rewrites the table once. Every other unusable value is read back and
# quarantined by the storage.
_V3 = """
DROP INDEX {s}.jobs_by_status;
ALTER TABLE {s}.jobs DROP COLUMN qrank;
ALTER TABLE {s}.jobs ADD COLUMN qrank integer GENERATED ALWAYS AS
    (CASE WHEN status = 'queued' THEN -GREATEST(priority, -2147483647) ELSE 0 END) STORED;
CREATE INDEX jobs_by_status ON {s}.jobs (origin, status, qrank, pos);

CREATE OR REPLACE FUNCTION {s}.claim(p_queues text[], p_worker text, p_now double precision)
RETURNS SETOF {s}.jobs LANGUAGE plpgsql AS $body$
DECLARE
    q text;
    r {s}.jobs;
BEGIN
    FOREACH q IN ARRAY p_queues LOOP
        UPDATE {s}.jobs j
        SET status = 'started', started_at = p_now, worker_name = p_worker,
            expires_at = NULL, pos = nextval('{s}.job_pos'),
            attempts = CASE WHEN j.attempts < 2147483647 THEN j.attempts + 1 ELSE j.attempts END
        WHERE j.id = (
            SELECT c.id FROM {s}.jobs c
            WHERE c.origin = q AND c.status = 'queued'
              AND (c.expires_at IS NULL OR c.expires_at > p_now)
            ORDER BY c.qrank, c.pos LIMIT 1
            FOR UPDATE SKIP LOCKED)
        RETURNING j.* INTO r;
        IF FOUND THEN
            RETURN NEXT r;
            RETURN;
        END IF;
    END LOOP;
END
$body$;
"""


def migrations(schema: str) -> dict[int, str]:
    """Statements that bring the schema from version ``n - 1`` to ``n`` (key ``n``)."""
    s = quote_ident(schema)
    return {1: _V1.format(s=s), 2: _V2.format(s=s), 3: _V3.format(s=s)}


def inspect(cur: Any, schema: str) -> int:
    """Classify the schema without writing to it.

    Returns:
        0 when the schema is absent or has no tables (safe to create in),
        else the plugq schema version found (1 .. :data:`SCHEMA_VERSION`).

    Raises:
        BackendUnavailableError: the schema belongs to another application,
            or a newer plugq made it.
    """
    cur.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f') ORDER BY 1",
        (schema,),
    )
    tables = [row[0] for row in cur.fetchall()]
    if not tables:
        return 0
    if "plugq_schema" not in tables:
        raise BackendUnavailableError(
            f"PostgreSQL schema {schema!r} belongs to another application (tables: "
            f"{', '.join(tables[:5])}); plugq will not add its tables to it: choose another "
            "one with ?schema=NAME"
        )
    cur.execute(f"SELECT max(version) FROM {quote_ident(schema)}.plugq_schema")
    row = cur.fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if version > SCHEMA_VERSION:
        raise BackendUnavailableError(
            f"PostgreSQL schema {schema!r} has plugq schema version {version}, newer than "
            f"this plugq understands ({SCHEMA_VERSION}); upgrade plugq (pip install -U plugq)"
        )
    if version < 1:
        raise BackendUnavailableError(
            f"PostgreSQL schema {schema!r} is marked as plugq's but has no schema version; "
            "it is damaged"
        )
    return version


def migrate(conn: Any, schema: str) -> None:
    """Create or upgrade the schema in one transaction, serialised by an advisory lock."""
    s = quote_ident(schema)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"plugq schema {schema}",))
        version = inspect(cur, schema)
        if version == SCHEMA_VERSION:
            return
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        if version == 0:
            cur.execute(
                f"CREATE TABLE {s}.plugq_schema (version integer NOT NULL, "
                "migrated_at timestamptz NOT NULL DEFAULT now())"
            )
        steps = migrations(schema)
        for step in range(version + 1, SCHEMA_VERSION + 1):
            cur.execute(steps[step])
            cur.execute(f"INSERT INTO {s}.plugq_schema (version) VALUES (%s)", (step,))
