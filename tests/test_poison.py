"""One corrupt record never stops the workers (issue 12, class 3).

Each table row corrupts one field of one job (or one worker) straight in the
store, as someone with write access could. One store holds every corrupt job
between good ones; then a real ``plugq worker --burst`` runs, and
``plugq info`` / ``plugq jobs`` look. The good jobs must all finish, each bad
one must end failed with the field named (or, where a worker's own claim
overwrites the field, simply run), the worker exits 0 without a traceback and
the monitors exit 0.
"""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from _cli_helpers import clean_env, plugq
from plugq import Dependency, Job, Queue, Worker, hookimpl
from plugq._quarantine import JOB_CHECKS, WORKER_CHECKS
from plugq.exceptions import CorruptRecordError
from plugq.plugins import register, unregister
from plugq.storage import JobRecord, WorkerRecord
from plugq.testing import tasks

FAILED, FINISHED = "failed", "finished"

#: column -> (SQL expression stored in it, expected outcome of the job).
SQLITE_JOB_CORRUPTIONS: dict[str, tuple[str, str]] = {
    "id": ("'bad' || char(10) || 'id'", FAILED),
    "func_name": ("CAST(x'ff' AS TEXT)", FAILED),
    "origin": ("CAST(x'ff' AS TEXT)", FAILED),
    "payload": ("123", FAILED),
    "serializer": ("'marshal'", FAILED),
    "status": ("'bogus'", FAILED),
    "description": ("x'00ff'", FAILED),
    "created_at": ("'yesterday'", FAILED),
    "enqueued_at": ("'soon'", FAILED),
    # The claim writes these four itself: the job runs as if they were sound.
    "started_at": ("'never'", FINISHED),
    "worker_name": ("42", FINISHED),
    "expires_at": ("'later'", FINISHED),
    "attempts": ("'many'", FINISHED),
    "ended_at": ("'x'", FAILED),
    "timeout": ("'forever'", FAILED),
    "result_ttl": ("'long'", FAILED),
    "failure_ttl": ("1.5", FAILED),
    "ttl": ("'x'", FAILED),
    "meta": ("5", FAILED),
    "result": ("5", FAILED),
    "exc_info": ("x'01'", FAILED),
    "retries_left": ("'x'", FAILED),
    "retry_intervals": ("'[1,'", FAILED),
    "depends_on": ("'{bad'", FAILED),
    "allow_dependency_failure": ("7", FAILED),
    "on_success": ("CAST(x'ff' AS TEXT)", FAILED),
    "on_failure": ("'a.b' || char(1)", FAILED),
    "scheduled_for": ("'x'", FAILED),
    "at_front": ("5", FAILED),
    "priority": ("'high'", FAILED),
    "unique_key": ("x'01'", FAILED),
    "rate_limit": ("5", FAILED),
    "pipe": ("x'01'", FAILED),
}

SQLITE_WORKER_CORRUPTIONS: dict[str, str] = {
    "name": "'w' || char(10)",
    "queues": "'[oops'",
    "pid": "'x'",
    "hostname": "x'ff'",
    "birth": "'x'",
    "last_heartbeat": "'recent'",
    "state": "5",
    "current_job_id": "5",
    "successful_jobs": "-3",
    "failed_jobs": "'x'",
}


def test_every_field_has_a_check_and_a_corruption():
    """A field added to a record without a check (or a test row) fails here."""
    assert set(JOB_CHECKS) == set(JobRecord.__dataclass_fields__) == set(SQLITE_JOB_CORRUPTIONS)
    assert set(WORKER_CHECKS) == set(WorkerRecord.__dataclass_fields__)
    assert set(WORKER_CHECKS) == set(SQLITE_WORKER_CORRUPTIONS)


def _assert_clean(result, what: str) -> None:
    assert result.returncode == 0, (what, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, (what, result.stderr)


def test_sqlite_each_corrupt_field_is_quarantined(tmp_path):
    url = f"sqlite:///{tmp_path / 'poison.db'}"
    q = Queue("poison", connection=url)
    good = [q.enqueue(tasks.add, 0, 1).id]
    bad: dict[str, str] = {}
    for column in SQLITE_JOB_CORRUPTIONS:
        bad[column] = q.enqueue(tasks.add, 1, 1).id
        good.append(q.enqueue(tasks.add, 2, len(good)).id)
    conn = sqlite3.connect(tmp_path / "poison.db", isolation_level=None)
    for column, (expr, _) in SQLITE_JOB_CORRUPTIONS.items():
        conn.execute(f"UPDATE jobs SET {column} = {expr} WHERE id = ?", (bad[column],))
    bad["id"] = conn.execute("SELECT id FROM jobs WHERE id LIKE 'bad%'").fetchone()[0]
    for field, expr in SQLITE_WORKER_CORRUPTIONS.items():
        conn.execute(
            "INSERT INTO workers VALUES ('w-' || ?, '[\"poison\"]', 1, 'h', 1.0, 1e12, 'busy', "
            "NULL, 0, 0)", (field,))
        conn.execute(f"UPDATE workers SET {field} = {expr} WHERE name = 'w-' || ?", (field,))
    conn.close()
    env = clean_env()

    _assert_clean(plugq("info", "--url", url, env=env), "info before")
    _assert_clean(plugq("info", "--url", url, "--json", env=env), "info --json before")
    worker = plugq("worker", "poison", "--burst", "--url", url, env=env)
    _assert_clean(worker, "worker")

    for job_id in good:
        job = Job.fetch(job_id, connection=url)
        assert job.get_status() == FINISHED, (job_id, job.exc_info)
    outcomes = {}
    for column in SQLITE_JOB_CORRUPTIONS:
        job = Job.fetch(bad[column], connection=url)
        status = job.get_status()
        named = f"field {column!r}" in (job.exc_info or "")
        outcomes[column] = (status.value, named if status == FAILED else True)
    assert outcomes == {c: (want, True) for c, (_, want) in SQLITE_JOB_CORRUPTIONS.items()}

    for status in ("failed", "finished", "queued", "started"):
        _assert_clean(plugq("jobs", "poison", "--status", status, "--limit", "100", "--url", url,
                            env=env), f"jobs {status}")
    _assert_clean(plugq("info", "--url", url, env=env), "info after")


def test_sqlite_corrupt_dependent_does_not_fail_its_parent(tmp_path):
    url = f"sqlite:///{tmp_path / 'dep.db'}"
    q = Queue("dep", connection=url)
    parent = q.enqueue(tasks.add, 1, 2)
    child = q.enqueue(tasks.add, 3, 4, depends_on=parent)
    sibling = q.enqueue(tasks.add, 5, 6, depends_on=parent)
    conn = sqlite3.connect(tmp_path / "dep.db", isolation_level=None)
    conn.execute("UPDATE jobs SET timeout = 'x' WHERE id = ?", (child.id,))
    conn.close()
    _assert_clean(plugq("worker", "dep", "--burst", "--url", url, env=clean_env()), "worker")
    assert parent.get_status() == FINISHED and parent.result == 3
    assert sibling.get_status() == FINISHED and sibling.result == 11
    assert child.get_status() == FAILED and "field 'timeout'" in (child.exc_info or "")


def test_memory_claim_quarantines_a_corrupt_record():
    from plugq_memory import MemoryBackend

    backend = MemoryBackend(f"memory://poison-{uuid.uuid4().hex}")
    q = Queue("m", connection=backend)
    first, bad, last = (q.enqueue(tasks.add, 1, 1), q.enqueue(tasks.add, 2, 2),
                        q.enqueue(tasks.add, 3, 3))
    backend._jobs[bad.id].timeout = float("nan")  # as a buggy plugin or a debugger could leave it
    Worker([q], connection=backend).work(burst=True)
    assert (first.get_status(), last.get_status()) == (FINISHED, FINISHED)
    assert bad.get_status() == FAILED and "field 'timeout'" in (bad.exc_info or "")


# -- Redis (the real test server) ------------------------------------------------

#: job-hash field -> the corrupt bytes planted in it. Every one must be quarantined.
REDIS_JOB_CORRUPTIONS: dict[str, bytes] = {
    "data": b"",
    "created_at": b"yesterday",
    "enqueued_at": b"soon",
    "started_at": b"never",
    "ended_at": b"x",
    "last_heartbeat": b"x",
    "origin": b"\xff",
    "worker_name": b"\xff",
    "description": b"\xfe",
    "group_id": b"\xff",
    "timeout": b"forever",
    "result_ttl": b"long",
    "failure_ttl": b"1.5",
    "ttl": b"x",
    "status": b"bogus",
    "success_callback_name": b"\xff",
    "failure_callback_name": b"a.b\x01",
    "stopped_callback_name": b"a b",
    "success_callback_timeout": b"x",
    "failure_callback_timeout": b"x",
    "stopped_callback_timeout": b"x",
    "webhooks": b"{not json",
    "dependency_ids": b"[1,",
    "dependency_id": b"\xff",
    "allow_dependency_failures": b"yes",
    "enqueue_at_front": b"maybe",
    "enqueue_at_front_on_retry": b"x",
    "number_of_retries": b"x",
    "retries_left": b"x",
    "retry_intervals": b"[nan]",
    "repeats_left": b"x",
    "repeat_intervals": b"{",
    "exc_info": b"\xff\xfe",
    "plugq_retry_intervals": b"[-1]",
    "plugq_attempts": b"many",
    "plugq_priority": b"high",
    "plugq_sig": b"\xff",
    # concurrency 0 is no RateLimit: the claim script leaves it unadmitted, the claim fails it
    "plugq_rate_limit": b'["k", 0, null, null]',
}

REDIS_WORKER_CORRUPTIONS: dict[str, bytes] = {
    "pid": b"x",
    "last_heartbeat": b"recent",
    "birth": b"x",
    "failed_job_count": b"x",
    "successful_job_count": b"1.5",
    "total_working_time": b"long",
    "current_job_working_time": b"x",
    "hostname": b"\xff",
    "state": b"\xff",
    "current_job": b"\xff",
    "queues": b"\xff",
    "ip_address": b"\xff",
    "version": b"\xff",
    "python_version": b"\xff",
}


def test_redis_tables_cover_every_field_rq_parses():
    from plugq_rq.poison import JOB_FIELDS, WORKER_FIELDS

    assert set(REDIS_JOB_CORRUPTIONS) == {"data", *JOB_FIELDS}
    assert set(REDIS_WORKER_CORRUPTIONS) == set(WORKER_FIELDS)


@pytest.mark.redis
def test_redis_each_corrupt_field_is_quarantined(redis_server, tmp_path):
    import redis
    from rq.utils import now as rq_now
    from rq.utils import utcformat

    redis_server.flushall()
    url = redis_server.url + "/0"
    conn = redis.Redis.from_url(url)
    q = Queue("poison", connection=url)
    good = [q.enqueue(tasks.add, 0, 1).id]
    bad: dict[str, str] = {}
    for field, value in REDIS_JOB_CORRUPTIONS.items():
        bad[field] = q.enqueue(tasks.add, 1, 1).id
        conn.hset(f"rq:job:{bad[field]}", field, value)
        good.append(q.enqueue(tasks.add, 2, len(good)).id)
    now = utcformat(rq_now())
    for field, value in REDIS_WORKER_CORRUPTIONS.items():
        key = f"rq:worker:w-{field}"
        conn.hset(key, mapping={"birth": now, "last_heartbeat": now, "queues": "poison",
                                "pid": 1, "hostname": "h", "state": "busy"})
        conn.hset(key, field, value)
        conn.sadd("rq:workers", key)
    env = clean_env()

    _assert_clean(plugq("info", "--url", url, env=env), "info before")
    _assert_clean(plugq("info", "--url", url, "--json", env=env), "info --json before")
    _assert_clean(plugq("jobs", "poison", "--limit", "100", "--url", url, env=env), "jobs before")
    worker = plugq("worker", "poison", "--burst", "--url", url, env=env)
    _assert_clean(worker, "worker")

    for job_id in good:
        job = Job.fetch(job_id, connection=url)
        assert job.get_status() == FINISHED, (job_id, job.exc_info)
    outcomes = {}
    for field, job_id in bad.items():
        job = Job.fetch(job_id, connection=url)
        outcomes[field] = (job.get_status().value, f"field {field!r}" in (job.exc_info or ""))
    assert outcomes == {field: (FAILED, True) for field in REDIS_JOB_CORRUPTIONS}

    for status in ("failed", "finished", "queued"):
        _assert_clean(plugq("jobs", "poison", "--status", status, "--limit", "100", "--url", url,
                            env=env), f"jobs {status}")
    _assert_clean(plugq("info", "--url", url, env=env), "info after")
    conn.close()


@pytest.mark.redis
def test_redis_corrupt_dependent_does_not_fail_its_parent(redis_server):
    import redis

    redis_server.flushall()
    url = redis_server.url + "/0"
    q = Queue("dep", connection=url)
    parent = q.enqueue(tasks.add, 1, 2)
    child = q.enqueue(tasks.add, 3, 4, depends_on=parent)
    sibling = q.enqueue(tasks.add, 5, 6, depends_on=parent)
    conn = redis.Redis.from_url(url)
    conn.hset(f"rq:job:{child.id}", "timeout", "forever")
    conn.close()
    _assert_clean(plugq("worker", "dep", "--burst", "--url", url, env=clean_env()), "worker")
    assert parent.get_status() == FINISHED and parent.result == 3
    assert sibling.get_status() == FINISHED and sibling.result == 11
    assert child.get_status() == FAILED and "field 'timeout'" in (child.exc_info or "")



# -- PostgreSQL (the local server, a throwaway schema) ----------------------------

#: column -> (SQL expression stored in it, expected outcome), or None where the
#: column's type admits no value the engine cannot use (any bytes in a bytea,
#: any text in a free-text column, a boolean NOT NULL, any 32-bit priority).
PG_JOB_CORRUPTIONS: dict[str, tuple[str, str] | None] = {
    "id": ("'bad' || chr(10) || 'id'", FAILED),
    "func_name": ("'tasks' || chr(1)", FAILED),
    "origin": None,  # any text names a queue: the job just moves there
    "payload": None,
    "serializer": ("'marshal'", FAILED),
    "status": ("'bogus'", FAILED),
    "description": None,
    "created_at": ("NULL", FAILED),
    "enqueued_at": ("'Infinity'", FAILED),
    # The claim writes these four itself: the job runs as if they were sound.
    "started_at": ("'NaN'", FINISHED),
    "worker_name": ("'nobody'", FINISHED),
    "expires_at": ("'NaN'", FINISHED),
    "attempts": ("2147483647", FINISHED),  # + 1 used to overflow inside the claim
    "ended_at": ("'-Infinity'", FAILED),
    "timeout": ("-1", FAILED),
    "result_ttl": ("-5", FAILED),
    "failure_ttl": ("-2", FAILED),
    "ttl": ("-9", FAILED),
    "meta": None,
    "result": None,
    "exc_info": None,
    "retries_left": ("-1", FAILED),
    "retry_intervals": ("'{1,NaN}'", FAILED),
    "depends_on": ("ARRAY[NULL]::text[]", FAILED),
    "allow_dependency_failure": None,
    "on_success": ("'a.b' || chr(1)", FAILED),
    "on_failure": ("''", FAILED),
    "scheduled_for": ("'NaN'", FAILED),
    "at_front": None,
    "priority": None,
    "unique_key": None,
    "rate_limit": ("'five a minute'", FAILED),
    "pipe": ("'{bad'", FAILED),
}

#: Values beyond one per column: other shapes the types allow.
PG_MORE_JOB_CORRUPTIONS: list[tuple[str, str, str]] = [
    ("attempts", "-3", FAILED),  # still negative after the claim's + 1
    ("retry_intervals", "'{{1,2},{3,4}}'", FAILED),  # two dimensions
    ("retry_intervals", "'{-1}'", FAILED),
    ("depends_on", "'{{a,b},{c,d}}'", FAILED),
    ("timeout", "'NaN'", FAILED),
    ("created_at", "'NaN'", FAILED),
    ("result_ttl", "-9223372036854775808", FAILED),
]

PG_WORKER_CORRUPTIONS: dict[str, str | None] = {
    "name": "'w' || chr(10)",
    "queues": "ARRAY[NULL]::text[]",
    "pid": "-3",
    "hostname": None,
    "birth": "'NaN'",
    "last_heartbeat": "'Infinity'",
    "state": None,
    "current_job_id": None,
    "successful_jobs": "-3",
    "failed_jobs": "-1",
}


def test_postgres_tables_cover_every_field():
    assert set(PG_JOB_CORRUPTIONS) == set(JOB_CHECKS)
    assert set(PG_WORKER_CORRUPTIONS) == set(WORKER_CHECKS)


def _pg(url: str):
    import psycopg

    from plugq_postgres._url import parse_url

    conn = psycopg.connect(parse_url(url).conninfo, autocommit=True)
    conn.execute(f'SET search_path TO "{parse_url(url).schema}"')
    return conn


@pytest.mark.postgres
def test_postgres_each_corrupt_field_is_quarantined(postgres_url):
    url = postgres_url
    q = Queue("poison", connection=url)
    good = [q.enqueue(tasks.add, 0, 1).id]
    planted: list[tuple[str, str, str, str]] = []  # (column, expression, outcome, job id)
    rows = [(c, *v) for c, v in PG_JOB_CORRUPTIONS.items() if v is not None]
    for column, expr, want in [*rows, *PG_MORE_JOB_CORRUPTIONS]:
        planted.append((column, expr, want, q.enqueue(tasks.add, 1, 1).id))
        good.append(q.enqueue(tasks.add, 2, len(good)).id)
    with _pg(url) as conn:
        for i, (column, expr, want, job_id) in enumerate(planted):
            conn.execute(f"UPDATE jobs SET {column} = {expr} WHERE id = %s", (job_id,))
            if column == "id":
                planted[i] = (column, expr, want, "bad\nid")
        for field, value in PG_WORKER_CORRUPTIONS.items():
            if value is None:
                continue
            conn.execute("INSERT INTO workers VALUES ('w-' || %s, ARRAY['poison'], 1, 'h', 1.0, "
                         "1e12, 'busy', NULL, 0, 0)", (field,))
            conn.execute(f"UPDATE workers SET {field} = {value} WHERE name = 'w-' || %s", (field,))
    env = clean_env()

    _assert_clean(plugq("info", "--url", url, env=env), "info before")
    _assert_clean(plugq("info", "--url", url, "--json", env=env), "info --json before")
    _assert_clean(plugq("jobs", "poison", "--limit", "100", "--url", url, env=env), "jobs before")
    _assert_clean(plugq("worker", "poison", "--burst", "--url", url, env=env), "worker")

    for job_id in good:
        job = Job.fetch(job_id, connection=url)
        assert job.get_status() == FINISHED, (job_id, job.exc_info)
    outcomes = {}
    for column, expr, _, job_id in planted:
        job = Job.fetch(job_id, connection=url)
        status = job.get_status()
        named = f"field {column!r}" in (job.exc_info or "")
        outcomes[(column, expr)] = (status.value, named if status == FAILED else True)
    assert outcomes == {(c, e): (want, True) for c, e, want, _ in planted}
    with _pg(url) as conn:
        # Failed in the table itself (not only read so): no worker meets them
        # again. Only the row whose status is no status was never claimed, and
        # reads never write: it stays as planted, read as failed.
        left = conn.execute("SELECT id, status FROM jobs WHERE status <> ALL(%s)",
                            ([FAILED, FINISHED],)).fetchall()
    assert left == [(dict((c, i) for c, _, _, i in planted)["status"], "bogus")]

    for status in ("failed", "finished", "queued", "started"):
        _assert_clean(plugq("jobs", "poison", "--status", status, "--limit", "100", "--url", url,
                            env=env), f"jobs {status}")
    _assert_clean(plugq("info", "--url", url, env=env), "info after")


@pytest.mark.postgres
def test_postgres_get_reads_a_corrupt_row_without_writing(postgres_url):
    from plugq_postgres import PostgresStorage

    q = Queue("r", connection=postgres_url)
    job = q.enqueue(tasks.add, 1, 1)
    with _pg(postgres_url) as conn:
        conn.execute("UPDATE jobs SET status = 'bogus' WHERE id = %s", (job.id,))
        storage = PostgresStorage(postgres_url)
        try:
            rec = storage.get(job.id)
            many = storage.get_many([job.id])
        finally:
            storage.close()
        assert rec is not None and rec.status.value == FAILED
        assert "field 'status'" in (rec.exc_info or "")
        assert many[0] is not None and many[0].status.value == FAILED
        stored = conn.execute("SELECT status FROM jobs WHERE id = %s", (job.id,)).fetchone()[0]
    assert stored == "bogus"


@pytest.mark.postgres
def test_postgres_corrupt_dependent_does_not_fail_its_parent(postgres_url):
    url = postgres_url
    q = Queue("dep", connection=url)
    parent = q.enqueue(tasks.add, 1, 2)
    child = q.enqueue(tasks.add, 3, 4, depends_on=parent)
    sibling = q.enqueue(tasks.add, 5, 6, depends_on=parent)
    with _pg(url) as conn:
        conn.execute("UPDATE jobs SET timeout = 'NaN' WHERE id = %s", (child.id,))
    _assert_clean(plugq("worker", "dep", "--burst", "--url", url, env=clean_env()), "worker")
    assert parent.get_status() == FINISHED and parent.result == 3
    assert sibling.get_status() == FINISHED and sibling.result == 11
    assert child.get_status() == FAILED and "field 'timeout'" in (child.exc_info or "")


# -- A quarantine is reported as any failure is (hook, dependents) ------------------


def _corrupt_timeout(kind: str, connection, job_id: str) -> None:
    """Make ``job_id``'s timeout unusable straight in the store."""
    if kind == "memory":
        connection._jobs[job_id].timeout = float("nan")
    elif kind == "sqlite":
        conn = sqlite3.connect(connection.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("UPDATE jobs SET timeout = 'forever' WHERE id = ?", (job_id,))
        conn.close()
    elif kind == "redis":
        import redis

        conn = redis.Redis.from_url(connection)
        conn.hset(f"rq:job:{job_id}", "timeout", "forever")
        conn.close()
    else:
        with _pg(connection) as conn:
            conn.execute("UPDATE jobs SET timeout = -1 WHERE id = %s", (job_id,))


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    """(kind, connection) on a fresh store."""
    if request.param == "memory":
        from plugq_memory import MemoryBackend

        return "memory", MemoryBackend(f"memory://q-{uuid.uuid4().hex}")
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'q.db'}"
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flushall()
        return "redis", server.url + "/0"
    return "postgres", request.getfixturevalue("postgres_url")


def test_quarantine_is_reported_as_a_failure(store):
    """The hook fires naming the field; dependents fare as a failed parent's do."""
    kind, connection = store
    failed: list[tuple[str, type, str]] = []

    class Recorder:
        @hookimpl
        def plugq_job_failed(self, job, exc_info):
            failed.append((job.id, exc_info[0], str(exc_info[1])))

    q = Queue("qr", connection=connection)
    # A parent that fails by running, and one that is quarantined: each with
    # a dependent that allows failure and one that does not.
    parents = {"ran": q.enqueue(tasks.fail), "poison": q.enqueue(tasks.add, 1, 1)}
    lenient = {k: q.enqueue(tasks.add, 2, 2, depends_on=Dependency([p], allow_failure=True))
               for k, p in parents.items()}
    strict = {k: q.enqueue(tasks.add, 3, 3, depends_on=p) for k, p in parents.items()}
    after = q.enqueue(tasks.add, 4, 4)
    _corrupt_timeout(kind, connection, parents["poison"].id)

    register(Recorder(), name="quarantine-recorder")
    try:
        Worker([q], connection=connection).work(burst=True)
    finally:
        unregister(name="quarantine-recorder")

    assert after.get_status() == FINISHED
    for k in parents:
        assert parents[k].get_status() == FAILED, k
        assert (lenient[k].get_status(), lenient[k].result) == (FINISHED, 4), k
        assert strict[k].get_status() == "deferred", k
    poison = parents["poison"].id
    reports = [(cls, text) for job_id, cls, text in failed if job_id == poison]
    assert len(reports) == 1, failed
    cls, text = reports[0]
    assert cls is CorruptRecordError and "field 'timeout'" in text
    # Claimed in queue order: the job that ran first, then the poison one.
    assert [job_id for job_id, _, _ in failed] == [parents["ran"].id, poison]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_store(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'q.db'}"
    return "postgres", request.getfixturevalue("postgres_url")


def test_corrupt_abandoned_job_is_reported_by_maintenance(sql_store):
    """A corrupt started job of a dead worker: failed by the recovery, reported as a failure."""
    kind, url = sql_store
    failed: list[tuple[str, type, str]] = []

    class Recorder:
        @hookimpl
        def plugq_job_failed(self, job, exc_info):
            failed.append((job.id, exc_info[0], str(exc_info[1])))

    q = Queue("ab", connection=url)
    job = q.enqueue(tasks.add, 1, 1)
    lenient = q.enqueue(tasks.add, 2, 2, depends_on=Dependency([job], allow_failure=True))
    # Started by a worker that is not registered (dead), with a corrupt timeout.
    if kind == "sqlite":
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("UPDATE jobs SET status = 'started', worker_name = 'ghost', "
                     "started_at = 1.0, timeout = 'x' WHERE id = ?", (job.id,))
        conn.close()
    else:
        with _pg(url) as pg:
            pg.execute("UPDATE jobs SET status = 'started', worker_name = 'ghost', "
                       "started_at = 1.0, timeout = -1 WHERE id = %s", (job.id,))

    register(Recorder(), name="abandoned-recorder")
    try:
        Worker([q], connection=url).work(burst=True)
    finally:
        unregister(name="abandoned-recorder")

    assert job.get_status() == FAILED and "field 'timeout'" in (job.exc_info or "")
    assert [(i, c) for i, c, _ in failed] == [(job.id, CorruptRecordError)], failed
    assert "field 'timeout'" in failed[0][2]
    assert (lenient.get_status(), lenient.result) == (FINISHED, 4)
