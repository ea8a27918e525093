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
from plugq import Job, Queue
from plugq._quarantine import JOB_CHECKS, WORKER_CHECKS
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
    from plugq import Worker
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
