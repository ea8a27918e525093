"""Issue 12's attack classes, each on SQLite and on the real Redis server.

The attacker can write to the store (the SQLite file, the Redis database) and
nothing else. Every planted job would create a marker file if any of it ran
(or was unpickled); each test asserts the marker is absent, the job ended
failed with the reason, and a good job behind it still ran.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pickle
import sqlite3
import threading
import uuid
import zlib
from pathlib import Path

import pytest

from _cli_helpers import assert_one_line_error, clean_env, plugq
from plugq import Job, JobStatus, Queue, Worker
from plugq.config import clear_settings_cache
from plugq.exceptions import ConfigurationError
from plugq.storage import JobRecord
from plugq.testing import tasks


class Evil:
    """A pickle that runs a shell command when it is read."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def settings(monkeypatch, tmp_path):
    for name in ("PLUGQ_SECRET_KEY", "PLUGQ_ALLOWED_MODULES", "PLUGQ_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml above: default settings
    clear_settings_cache()
    yield
    clear_settings_cache()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def kind(request) -> str:
    return request.param


@pytest.fixture
def url(kind, tmp_path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'attack.db'}"
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.url + "/0"


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def configure(monkeypatch, tmp_path, *, key: str | None = None, json_only: bool = False,
              allowed: str | None = None) -> None:
    if key is None:
        monkeypatch.delenv("PLUGQ_SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("PLUGQ_SECRET_KEY", key)
    if allowed is None:
        monkeypatch.delenv("PLUGQ_ALLOWED_MODULES", raising=False)
    else:
        monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", allowed)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.plugq]\nserializer = "json"\n' if json_only else "[tool.plugq]\n"
    )
    clear_settings_cache()


def run(url: str, queue: str) -> None:
    extra = {"worker_class": "simple"} if url.startswith("redis") else {}
    Worker([Queue(queue, connection=url)], connection=url, **extra).work(burst=True)


def plant(url: str, queue: str, func_name: str, args: list, serializer: str = "pickle") -> str:
    """A job written straight into the store, in the store's own format."""
    job_id = str(uuid.uuid4())
    if url.startswith("sqlite"):
        from plugq_sqlite import SqliteBackend

        data = (json.dumps([args, {}]).encode() if serializer == "json"
                else pickle.dumps((tuple(args), {})))
        backend = SqliteBackend(url)
        backend.insert([JobRecord(id=job_id, func_name=func_name, origin=queue, payload=data,
                                  serializer=serializer, enqueued_at=1.0, created_at=1.0)])
        backend.close()
        return job_id
    import redis

    data = (json.dumps([func_name, None, args, {}]).encode() if serializer == "json"
            else pickle.dumps((func_name, None, tuple(args), {})))
    conn = redis.Redis.from_url(url)
    conn.hset(f"rq:job:{job_id}", mapping={
        "data": zlib.compress(data), "status": "queued", "origin": queue,
        "created_at": "2024-01-01T00:00:00.000000Z", "description": "planted"})
    conn.sadd("rq:queues", f"rq:queue:{queue}")
    conn.rpush(f"rq:queue:{queue}", job_id)
    conn.close()
    return job_id


def assert_refused(url: str, job_id: str, *reasons: str) -> None:
    job = Job.fetch(job_id, connection=url)
    assert job.get_status() == JobStatus.FAILED, job.exc_info
    text = job.exc_info or ""
    assert any(r in text for r in reasons), text


# -- 1. the allow-list follows modules, not name prefixes -------------------------------


@pytest.fixture
def app_module(tmp_path, monkeypatch) -> str:
    """An allowed application module that, as real ones do, imports things."""
    name = f"appmod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import os\nfrom os import system\n\ndef ok(a, b):\n    return a + b\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("path", ["{app}.os.system", "{app}.system", "plugq.testing.tasks.os.system"])
def test_allow_list_traversal_runs_nothing(url, monkeypatch, tmp_path, marker, app_module,
                                           serializer, path):
    configure(monkeypatch, tmp_path, allowed=f"{app_module},plugq.testing.tasks",
              json_only=serializer == "json")
    job_id = plant(url, "trav", path.format(app=app_module), [f"touch {marker}"], serializer)
    good = Queue("trav", connection=url).enqueue(tasks.add, 2, 3)
    run(url, "trav")
    assert not marker.exists()
    assert_refused(url, job_id, "allowed_modules")
    assert good.get_status() == "finished" and good.result == 5


def test_allow_list_still_runs_a_function_defined_in_the_module(url, monkeypatch, tmp_path,
                                                               app_module):
    configure(monkeypatch, tmp_path, allowed=app_module)
    job_id = plant(url, "fine", f"{app_module}.ok", [2, 3])
    run(url, "fine")
    job = Job.fetch(job_id, connection=url)
    assert job.get_status() == "finished" and job.result == 5


# -- 2. nothing is deserialized before it is verified ----------------------------------


def _plant_finished_with_evil(url: str, queue: str, marker: Path) -> str:
    """A finished job whose stored result (and meta) is a code-running pickle."""
    evil = pickle.dumps(Evil(str(marker)))
    if url.startswith("sqlite"):
        job = Queue(queue, connection=url).enqueue(tasks.add, 1, 2)
        run(url, queue)
        path = url[len("sqlite:///"):]
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("UPDATE jobs SET result = ?, meta = ? WHERE id = ?", (evil, evil, job.id))
        conn.close()
        return job.id
    import redis

    # rq's format with an empty data field: nothing to verify, meta and result pickles.
    conn = redis.Redis.from_url(url)
    job_id = str(uuid.uuid4())
    conn.hset(f"rq:job:{job_id}", mapping={
        "data": b"", "status": "finished", "origin": queue, "meta": evil, "result": evil,
        "created_at": "2024-01-01T00:00:00.000000Z"})
    conn.zadd(f"rq:finished:{queue}", {job_id: 9e9})
    conn.sadd("rq:queues", f"rq:queue:{queue}")
    conn.close()
    return job_id


@pytest.mark.parametrize("guard", ["json", "key", "all"])
def test_planted_result_and_meta_are_never_unpickled(url, monkeypatch, tmp_path, marker, guard):
    job_id = _plant_finished_with_evil(url, "read", marker)
    configure(monkeypatch, tmp_path, json_only=guard in ("json", "all"),
              key="s3cret" if guard in ("key", "all") else None,
              allowed="plugq.testing.tasks" if guard == "all" else None)
    env = clean_env(**({"PLUGQ_SECRET_KEY": "s3cret"} if guard != "json" else {}))
    if guard == "all":
        env["PLUGQ_ALLOWED_MODULES"] = "plugq.testing.tasks"
    for status in ("finished", "failed"):
        result = plugq("jobs", "read", "--status", status, "--url", url, cwd=tmp_path, env=env)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    job = Job.fetch(job_id, connection=url)
    for read in (lambda: job.return_value(refresh=False), lambda: job.meta):
        # Refused unread is the expected outcome; the marker says whether anything ran.
        with contextlib.suppress(Exception):
            read()
    run(url, "read")
    assert not marker.exists()


def test_json_only_worker_refuses_a_planted_pickle(url, monkeypatch, tmp_path, marker):
    configure(monkeypatch, tmp_path, json_only=True)
    if url.startswith("sqlite"):
        job_id = plant(url, "jsononly", "plugq.testing.tasks.add", [1, 2])
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?",
                     (pickle.dumps(Evil(str(marker))), job_id))
        conn.close()
    else:
        job_id = plant(url, "jsononly", "plugq.testing.tasks.add", [Evil(str(marker))])
    good = Queue("jsononly", connection=url).enqueue(tasks.add, 2, 3)
    run(url, "jsononly")
    assert not marker.exists()
    assert_refused(url, job_id, "serializer = 'json'")
    assert good.get_status() == "finished"


# -- 3. the signature binds the job: its id, its queue, every field acted on -----------


def _copy_job(url: str, job_id: str, queue: str) -> str:
    new_id = str(uuid.uuid4())
    if url.startswith("sqlite"):
        from plugq_sqlite import SqliteBackend

        backend = SqliteBackend(url)
        rec = backend.get(job_id)
        backend.remove(job_id)
        rec.id = new_id
        backend.insert([rec])
        backend.close()
        return new_id
    import redis

    conn = redis.Redis.from_url(url)
    conn.hset(f"rq:job:{new_id}", mapping=conn.hgetall(f"rq:job:{job_id}"))
    conn.lrem(f"rq:queue:{queue}", 0, job_id)
    conn.delete(f"rq:job:{job_id}")
    conn.rpush(f"rq:queue:{queue}", new_id)
    conn.close()
    return new_id


def test_signed_job_copied_under_another_id_is_refused(url, monkeypatch, tmp_path, marker):
    configure(monkeypatch, tmp_path, key="s3cret")
    job = Queue("copy", connection=url).enqueue(tasks.append_line, str(marker), "x")
    copy_id = _copy_job(url, job.id, "copy")
    run(url, "copy")
    assert not marker.exists()
    assert_refused(url, copy_id, "bad signature")


def _set_field(url: str, job_id: str, field: str, value: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.execute(f"UPDATE jobs SET {field} = ? WHERE id = ?", (value, job_id))
        conn.close()
        return
    import redis

    conn = redis.Redis.from_url(url)
    conn.hset(f"rq:job:{job_id}", field, value)
    conn.close()


def _move_to_queue(url: str, job_id: str, old: str, new: str) -> None:
    """Move a queued job to queue ``new`` in the store itself (its signature left as it is)."""
    _set_field(url, job_id, "origin", new)
    if url.startswith("redis"):
        import redis

        conn = redis.Redis.from_url(url)
        conn.lrem(f"rq:queue:{old}", 0, job_id)
        conn.rpush(f"rq:queue:{new}", job_id)
        conn.sadd("rq:queues", f"rq:queue:{new}")
        conn.close()


def test_signed_job_moved_to_another_queue_is_refused(url, monkeypatch, tmp_path, marker):
    configure(monkeypatch, tmp_path, key="s3cret")
    job = Queue("quiet", connection=url).enqueue(tasks.append_line, str(marker), "x")
    _move_to_queue(url, job.id, "quiet", "busy")
    run(url, "busy")
    assert not marker.exists()
    assert_refused(url, job.id, "bad signature")


@pytest.mark.parametrize("field", ["depends_on", "retry_intervals"])
def test_sqlite_unsigned_field_change_is_refused(tmp_path, monkeypatch, marker, field):
    url = f"sqlite:///{tmp_path / 'fields.db'}"
    configure(monkeypatch, tmp_path, key="s3cret")
    job = Queue("fields", connection=url).enqueue(tasks.append_line, str(marker), "x")
    _set_field(url, job.id, field, json.dumps([0.0]) if field == "retry_intervals" else '["other"]')
    run(url, "fields")
    assert not marker.exists()
    assert_refused(url, job.id, "bad signature")


@pytest.mark.redis
@pytest.mark.parametrize("field", ["webhooks", "dependency_ids", "retry_intervals", "timeout"])
def test_redis_fields_rq_acts_on_are_signed(redis_server, tmp_path, monkeypatch, marker, field):
    """A webhook would make the worker send an HTTP request: the request is the marker."""
    redis_server.flushall()
    url = redis_server.url + "/0"

    class Touch(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            marker.touch()
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Touch)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configure(monkeypatch, tmp_path, key="s3cret")
        job = Queue("hooks", connection=url).enqueue(tasks.append_line, str(marker), "x")
        value = {
            "webhooks": json.dumps([{"url": f"http://127.0.0.1:{server.server_port}/",
                                     "job_status": "failed"}]),
            "dependency_ids": json.dumps([]),
            "retry_intervals": json.dumps([0]),
            "timeout": "99999",
        }[field]
        _set_field(url, job.id, field, value)
        run(url, "hooks")
    finally:
        server.shutdown()
    assert not marker.exists()
    assert_refused(url, job.id, "bad signature")


# -- 4. key handling ---------------------------------------------------------------------


def test_worker_without_the_key_refuses_a_signed_job(url, monkeypatch, tmp_path, marker):
    configure(monkeypatch, tmp_path, key="s3cret")
    job = Queue("nokey", connection=url).enqueue(tasks.append_line, str(marker), "x")
    configure(monkeypatch, tmp_path, key=None)
    good = plant(url, "nokey", "plugq.testing.tasks.add", [2, 3])
    run(url, "nokey")
    assert not marker.exists()
    assert_refused(url, job.id, "no PLUGQ_SECRET_KEY")
    assert Job.fetch(good, connection=url).get_status() == "finished"
    # Monitoring works without the key.
    result = plugq("info", "--url", url, cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr


def test_empty_key_is_a_configuration_error(url, monkeypatch, tmp_path, marker):
    configure(monkeypatch, tmp_path)
    plant(url, "empty", "plugq.testing.tasks.append_line", [str(marker), "x"])
    result = plugq("worker", "empty", "--burst", "--url", url, cwd=tmp_path,
                   env=clean_env(PLUGQ_SECRET_KEY=""))
    assert_one_line_error(result, 2, "PLUGQ_SECRET_KEY")
    assert not marker.exists()
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "")
    with pytest.raises(ConfigurationError, match="PLUGQ_SECRET_KEY"):
        Queue("empty", connection=url).enqueue(tasks.add, 1, 2)


# -- a workflow step's inputs are signed ---------------------------------------------------

_PIPE_FIELD = {"sqlite": "pipe", "redis": "plugq_pipe"}


def test_a_pipe_planted_on_a_signed_job_is_refused(url, kind, monkeypatch, tmp_path, marker):
    """A pipe makes another job's result the first argument: planting one changes what runs."""
    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("piped", connection=url)
    source = q.enqueue(tasks.add, 1, 2)
    run(url, "piped")
    assert source.get_status(refresh=True) == JobStatus.FINISHED
    job = q.enqueue(tasks.append_line, str(marker), "x")
    _set_field(url, job.id, _PIPE_FIELD[kind], json.dumps({"from": source.id}))
    run(url, "piped")
    assert not marker.exists()
    assert_refused(url, job.id, "bad signature")


def test_a_changed_pipe_of_a_signed_chain_step_is_refused(url, kind, monkeypatch, tmp_path):
    """The step was signed with its pipe: pointing it at another job's result is refused."""
    from plugq.workflow import chain

    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("chained", connection=url)
    other = q.enqueue(tasks.add, 40, 2)
    run(url, "chained")
    first, second = chain(q, [Queue.prepare_data(tasks.add, (1, 2)),
                              Queue.prepare_data(tasks.add, (10,))])
    _set_field(url, second.id, _PIPE_FIELD[kind], json.dumps({"from": other.id}))
    run(url, "chained")
    assert first.get_status(refresh=True) == JobStatus.FINISHED
    assert_refused(url, second.id, "bad signature")


def test_a_signed_chain_step_runs_with_its_own_pipe(url, monkeypatch, tmp_path):
    """The control for the two tests above: unchanged, the step verifies and gets its input."""
    from plugq.workflow import chain

    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("chained", connection=url)
    _first, second = chain(q, [Queue.prepare_data(tasks.add, (1, 2)),
                               Queue.prepare_data(tasks.add, (10,))])
    run(url, "chained")
    assert second.get_status(refresh=True) == JobStatus.FINISHED
    assert second.return_value() == 13


def test_a_signed_group_callback_runs_with_its_members_results(url, monkeypatch, tmp_path):
    from plugq.workflow import group

    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("grouped", connection=url)
    jobs = group(q, [Queue.prepare_data(tasks.add, (1, 2)), Queue.prepare_data(tasks.add, (3, 4))],
                 on_complete=Queue.prepare_data(tasks.echo))
    run(url, "grouped")
    callback = jobs[-1]
    assert callback.get_status(refresh=True) == JobStatus.FINISHED, callback.exc_info
    members = callback.return_value()["args"][0]
    assert [m.result for m in members] == [3, 7]


# -- issue 16's fields are signed (v3), and jobs signed before v3 still run -------------

#: The stored name of each field: the SQLite column, the Redis hash field.
_ISSUE16_FIELD = {
    "sqlite": {"priority": "priority", "unique_key": "unique_key", "rate_limit": "rate_limit"},
    "redis": {"priority": "plugq_priority", "unique_key": "plugq_unique_key",
              "rate_limit": "plugq_rate_limit"},
}
#: What the producer asked for, and what the attacker writes instead (or adds).
_ISSUE16_VALUE = {
    "priority": (3, "9"),
    "unique_key": ("report-1", "report-2"),
    "rate_limit": (("partner", 1), ("partner", 1000)),
}


def _issue16_options(field: str) -> dict:
    from plugq import RateLimit, Unique

    value = _ISSUE16_VALUE[field][0]
    if field == "priority":
        return {"priority": value}
    if field == "unique_key":
        return {"unique": Unique(value)}
    key, concurrency = value
    return {"rate_limit": RateLimit(key, concurrency=concurrency)}


def _issue16_forged(field: str) -> str:
    from plugq import RateLimit

    value = _ISSUE16_VALUE[field][1]
    if field == "rate_limit":
        key, concurrency = value
        return RateLimit(key, concurrency=concurrency).dumps()
    return value


def _write_field(url: str, job_id: str, field: str, value: str | None) -> None:
    """Set (or, with None, remove) a stored field, as an attacker with write access."""
    if value is not None:
        _set_field(url, job_id, field, value)
        return
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.execute(f"UPDATE jobs SET {field} = ? WHERE id = ?",
                     (0 if field == "priority" else None, job_id))
        conn.close()
        return
    import redis

    conn = redis.Redis.from_url(url)
    conn.hdel(f"rq:job:{job_id}", field)
    conn.close()


def _stored_field(url: str, job_id: str, field: str):
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        (value,) = conn.execute(f"SELECT {field} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        conn.close()
        return value
    import redis

    conn = redis.Redis.from_url(url)
    value = conn.hget(f"rq:job:{job_id}", field)
    conn.close()
    return value


def assert_refused_unrun(url: str, job_id: str, marker: Path) -> None:
    assert not marker.exists()
    assert_refused(url, job_id, "bad signature")
    text = Job.fetch(job_id, connection=url).exc_info or ""
    assert "UntrustedJobError" in text and "refused unrun" in text, text


@pytest.mark.parametrize("field", ["priority", "unique_key", "rate_limit"])
@pytest.mark.parametrize("change", ["altered", "removed"])
def test_an_issue16_field_changed_on_a_signed_job_is_refused(url, kind, monkeypatch, tmp_path,
                                                              marker, field, change):
    """Re-ordering a job, dropping or loosening its RateLimit, or changing its unique key
    in the store breaks its signature: the worker refuses it unrun."""
    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("i16", connection=url)
    job = q.enqueue(tasks.append_line, str(marker), "x", **_issue16_options(field))
    stored = _ISSUE16_FIELD[kind][field]
    assert _stored_field(url, job.id, stored) not in (None, 0, b"")  # the producer's value is there
    _write_field(url, job.id, stored, _issue16_forged(field) if change == "altered" else None)
    run(url, "i16")
    assert_refused_unrun(url, job.id, marker)


@pytest.mark.parametrize("field", ["priority", "unique_key", "rate_limit"])
def test_an_issue16_field_added_to_a_signed_job_is_refused(url, kind, monkeypatch, tmp_path,
                                                            marker, field):
    configure(monkeypatch, tmp_path, key="s3cret")
    job = Queue("i16add", connection=url).enqueue(tasks.append_line, str(marker), "x")
    _write_field(url, job.id, _ISSUE16_FIELD[kind][field], _issue16_forged(field))
    run(url, "i16add")
    assert_refused_unrun(url, job.id, marker)


def test_a_signed_job_with_issue16_fields_runs(url, kind, monkeypatch, tmp_path, marker):
    """The control for the tests above: unchanged, the job verifies and runs."""
    from plugq import RateLimit, Unique

    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("i16ok", connection=url)
    job = q.enqueue(tasks.append_line, str(marker), "x", priority=3, unique=Unique("report-1"),
                    rate_limit=RateLimit("partner", concurrency=1))
    # Written in the current format (v3), which binds the three fields.
    if kind == "sqlite":
        assert _stored_field(url, job.id, "payload")[:4] == b"PQS3"
    else:
        assert _stored_field(url, job.id, "plugq_sig").startswith(b"v3:")
    run(url, "i16ok")
    assert job.get_status(refresh=True) == JobStatus.FINISHED, job.exc_info
    assert marker.read_text() == "x\n"


def _relabel_v2(url: str, job_id: str) -> None:
    """The downgrade: keep the v3 MAC but label the signature v2, which does not bind
    issue 16's fields (the attacker cannot compute a v2 MAC without the key)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        (payload,) = conn.execute("SELECT payload FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert payload[:4] == b"PQS3"
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", (b"PQS1" + payload[4:], job_id))
        conn.close()
        return
    import redis

    conn = redis.Redis.from_url(url)
    sig = conn.hget(f"rq:job:{job_id}", "plugq_sig")
    assert sig is not None and sig.startswith(b"v3:") and len(sig) == 3 + 64
    conn.hset(f"rq:job:{job_id}", "plugq_sig", sig[3:])
    conn.close()


@pytest.mark.parametrize(("field", "change"), [
    (None, None), ("priority", "removed"), ("rate_limit", "removed"),
    ("priority", "added"), ("rate_limit", "added"),
])
def test_a_v3_signature_relabelled_v2_is_refused(url, kind, monkeypatch, tmp_path, marker,
                                                 field, change):
    configure(monkeypatch, tmp_path, key="s3cret")
    options = _issue16_options(field) if change == "removed" else {}
    job = Queue("downgrade", connection=url).enqueue(tasks.append_line, str(marker), "x", **options)
    _relabel_v2(url, job.id)
    if field is not None:
        # What the downgrade is for: a field v2 did not bind, removed or added.
        _write_field(url, job.id, _ISSUE16_FIELD[kind][field],
                     None if change == "removed" else _issue16_forged(field))
    run(url, "downgrade")
    assert_refused_unrun(url, job.id, marker)


def _resign_v2(url: str, job_id: str, key: bytes) -> None:
    """Rewrite a stored job's signature as plugq wrote it before v3 (see _legacy_signing)."""
    from _legacy_signing import rq_v2_sig, sealed_data, v2_seal

    if url.startswith("sqlite"):
        from plugq_sqlite import SqliteBackend

        backend = SqliteBackend(url)
        rec = backend.get(job_id)
        backend.close()
        assert rec is not None and rec.payload[:4] == b"PQS3"
        payload = v2_seal(rec, sealed_data(rec.payload), key)
        conn = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", (payload, job_id))
        conn.close()
        return
    import redis

    conn = redis.Redis.from_url(url)
    raw = conn.hgetall(f"rq:job:{job_id}")
    assert raw[b"plugq_sig"].startswith(b"v3:")
    conn.hset(f"rq:job:{job_id}", "plugq_sig", rq_v2_sig(key, job_id, raw))
    conn.close()


def test_a_job_signed_before_v3_still_runs(url, kind, monkeypatch, tmp_path, marker):
    """Compatibility: a job signed by the pre-v3 code (its format does not bind priority,
    unique_key or rate_limit) and still in the store runs under the current code."""
    from plugq import RateLimit, Unique

    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("legacy", connection=url)
    job = q.enqueue(tasks.append_line, str(marker), "x", priority=3, unique=Unique("report-1"),
                    rate_limit=RateLimit("partner", concurrency=1))
    _resign_v2(url, job.id, b"s3cret")
    run(url, "legacy")
    assert job.get_status(refresh=True) == JobStatus.FINISHED, job.exc_info
    assert marker.read_text() == "x\n"
    if kind == "sqlite":
        # A storage keeps the payload as sealed: still v2.
        assert _stored_field(url, job.id, "payload")[:4] == b"PQS1"
    else:
        # The outcome's rewrite, after the v2 signature verified, signs it v3.
        assert _stored_field(url, job.id, "plugq_sig").startswith(b"v3:")


def test_a_job_signed_before_v3_moved_to_another_queue_is_still_refused(url, monkeypatch,
                                                                     tmp_path, marker):
    """A v2 signature is verified, not waved through: what v2 bound stays bound."""
    configure(monkeypatch, tmp_path, key="s3cret")
    q = Queue("legacy-cb", connection=url)
    job = q.enqueue(tasks.append_line, str(marker), "x", priority=3)
    _resign_v2(url, job.id, b"s3cret")
    _move_to_queue(url, job.id, "legacy-cb", "elsewhere")
    run(url, "elsewhere")
    assert_refused_unrun(url, job.id, marker)


def test_without_a_key_issue16_fields_are_stored_unsigned_and_run(url, kind, monkeypatch,
                                                                  tmp_path, marker):
    from plugq import RateLimit, Unique

    configure(monkeypatch, tmp_path, key=None)
    q = Queue("nokey16", connection=url)
    job = q.enqueue(tasks.append_line, str(marker), "x", priority=3, unique=Unique("report-1"),
                    rate_limit=RateLimit("partner", concurrency=1))
    if kind == "sqlite":
        payload = _stored_field(url, job.id, "payload")
        assert payload[:4] not in (b"PQS1", b"PQS3")
    else:
        assert _stored_field(url, job.id, "plugq_sig") is None
    # Without a key the store is trusted: a changed priority is not checked.
    _write_field(url, job.id, _ISSUE16_FIELD[kind]["priority"], "5")
    run(url, "nokey16")
    assert job.get_status(refresh=True) == JobStatus.FINISHED, job.exc_info
    assert marker.read_text() == "x\n"
