"""The RQ backend: the conformance suite on a real redis-server and on fakeredis,
plus what is specific to Redis (URLs, connection errors, worker classes, losing Redis)."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("rq")

from plugq.testing.conformance import BackendConformance

pytestmark = pytest.mark.redis


class TestRedisConformance(BackendConformance):
    """Every conformance test on a real redis-server (plugq's engine over RedisStorage)."""

    @pytest.fixture
    def backend(self, redis_server):
        from plugq._engine import engine_for
        from plugq_rq.storage import RedisStorage

        redis_server.flushall()
        b = engine_for(RedisStorage(redis_server.url))
        yield b
        b.close()


class TestFakeRedisConformance(BackendConformance):
    """Every conformance test on fakeredis (one fresh in-process server per test)."""

    @pytest.fixture
    def backend(self):
        from plugq._engine import engine_for
        from plugq_rq.storage import RedisStorage

        b = engine_for(RedisStorage(f"fakeredis://conformance-{uuid.uuid4().hex}"))
        yield b
        b.close()


# -- Redis-specific behaviour -------------------------------------------------------

from plugq import BackendUnavailableError, Job, Queue, Worker, connect  # noqa: E402
from plugq.testing import tasks  # noqa: E402


def _wait_until(predicate, timeout: float = 20.0, message: str = "condition") -> None:
    import time

    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(0.05)


def test_server_down_is_one_clear_error_with_the_password_masked():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendUnavailableError) as err:
        Queue("q", connection=f"redis://:s3cret@127.0.0.1:{port}/0")
    text = str(err.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in text
    assert "s3cret" not in text
    assert "cannot connect" in text


def test_wrong_password_is_a_clear_error(redis_server):
    from redis import Redis

    admin = Redis(host="127.0.0.1", port=redis_server.port)
    admin.config_set("requirepass", "right-pw")
    try:
        url = redis_server.url.replace("redis://", "redis://default:wrong-pw@") + "/0"
        with pytest.raises(BackendUnavailableError) as err:
            connect(url)
    finally:
        Redis(host="127.0.0.1", port=redis_server.port, password="right-pw").config_set(
            "requirepass", ""
        )
    assert "***" in str(err.value) and "wrong-pw" not in str(err.value)
    assert "password" in str(err.value) or "authentication" in str(err.value).lower()


def test_wrong_db_is_a_clear_error(redis_server):
    with pytest.raises(BackendUnavailableError) as err:
        connect(redis_server.url + "/99")
    assert "database" in str(err.value) and "/99" in str(err.value)


def test_redis_client_selects_the_rq_backend_and_sees_the_same_jobs(redis_server):
    from redis import Redis

    from plugq._engine import Engine
    from plugq_rq.storage import RedisStorage

    redis_server.flushall()
    client = Redis(host="127.0.0.1", port=redis_server.port)
    q = Queue("client-q", connection=client)
    assert isinstance(q.backend, Engine) and isinstance(q.backend.storage, RedisStorage)
    assert Queue("client-q", connection=client).backend is q.backend
    job = q.enqueue(tasks.add, 1, 2)
    assert client.exists(f"rq:job:{job.id}") and client.lrange("rq:queue:client-q", 0, -1) == [
        job.id.encode()
    ]
    assert Job.fetch(job.id, connection=redis_server.url + "/0").get_status() == "queued"


@pytest.mark.parametrize("worker_class", ["fork", "simple", "spawn"])
def test_each_rq_worker_class_runs_jobs(redis_server, worker_class, tmp_path):
    redis_server.flushall()
    url = redis_server.url + "/0"
    q = Queue(f"wc-{worker_class}", connection=url)
    path = str(tmp_path / "meta")
    ok = q.enqueue(tasks.report_progress, 2)
    bad = q.enqueue(tasks.fail, "nope")
    slow = q.enqueue(tasks.busy, 5, job_timeout=1)
    assert Worker([q], worker_class=worker_class).work(burst=True)
    assert ok.result == 2 and ok.get_meta()["progress"] == 2
    assert bad.get_status() == "failed" and "ValueError: nope" in bad.exc_info
    assert slow.get_status() == "failed" and "JobTimeoutException" in slow.exc_info
    assert ok.worker_name and ok.attempts == 1
    del path


def test_fakeredis_refuses_forking_workers():
    from plugq import NotSupportedError

    q = Queue("fk", connection=f"fakeredis://{uuid.uuid4().hex}")
    q.enqueue(tasks.add, 1, 1)
    with pytest.raises(NotSupportedError, match="simple"):
        Worker([q], worker_class="fork").work(burst=True)


def test_hooks_fire_on_the_rq_backend():
    from plugq import hookimpl, plugins

    seen: list[tuple[str, object]] = []

    class Recorder:
        @hookimpl
        def plugq_job_started(self, job, worker):
            seen.append(("started", job.id))

        @hookimpl
        def plugq_job_finished(self, job, result):
            seen.append(("finished", result))

        @hookimpl
        def plugq_job_failed(self, job, exc_info):
            seen.append(("failed", exc_info[0].__name__))

    name = f"rec-{uuid.uuid4().hex}"
    plugins.register(Recorder(), name=name)
    try:
        q = Queue("hooks", connection=f"fakeredis://{uuid.uuid4().hex}")
        ok = q.enqueue(tasks.add, 2, 2)
        q.enqueue(tasks.fail, "x")
        Worker([q]).work(burst=True)
    finally:
        plugins.unregister(name=name)
    assert seen == [("started", ok.id), ("finished", 4), ("started", seen[2][1]), ("failed", "ValueError")]


def test_worker_survives_redis_restart_and_loses_no_job(redis_server, tmp_path):
    import threading

    redis_server.flushall()
    url = redis_server.url + "/0"
    q = Queue("survivor", connection=url)
    first = q.enqueue(tasks.add, 1, 1)
    w = Worker([q], worker_class="simple")
    t = threading.Thread(target=w.work, daemon=True)
    t.start()
    try:
        _wait_until(lambda: first.get_status() == "finished", message="the first job")
        redis_server.restart()  # no persistence: the server comes back empty
        _wait_until(lambda: _enqueue_ok(q), message="Redis to accept jobs again")
        second = q.enqueue(tasks.add, 2, 2)
        _wait_until(lambda: _status(second) == "finished", timeout=60, message="the worker to resume")
        assert second.result == 4
        assert t.is_alive()
    finally:
        w.request_stop()
        t.join(15)
    assert not t.is_alive()


def _enqueue_ok(q) -> bool:
    try:
        q.backend.storage.redis.ping()
        return True
    except Exception:
        return False


def _status(job) -> str | None:
    try:
        return job.get_status()
    except Exception:
        return None


def test_a_plugq_worker_never_imports_rq(redis_server):
    """rq stays a dependency (its data format, the interop tests), but a plugq worker
    process never imports it: all of rq would cost the worker several MB of RSS."""
    import subprocess
    import sys
    from pathlib import Path

    url = redis_server.url + "/3"
    q = Queue("no-rq", connection=url)
    first = q.enqueue(tasks.add, 1, 2)
    # The second job looks, after the worker claimed, ran and stored the first.
    probe = q.enqueue(tasks.modules_loaded, "rq")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("plugq")), "worker", "--url", url, "--burst", "no-rq"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert first.get_status() == "finished" and probe.get_status() == "finished"
    assert probe.result == []
