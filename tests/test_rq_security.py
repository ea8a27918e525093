"""plugq's security guards on the Redis backend, against the real test server.

Every attack would leave a marker file behind if anything of it ran; each test
asserts the file is absent, the job failed with the reason stated, and the
worker went on to run the good job queued behind it.
"""

from __future__ import annotations

import os
import pickle
import uuid
import zlib
from pathlib import Path

import pytest

pytest.importorskip("rq")

import redis

from plugq import Job, JobStatus, Queue, Worker
from plugq.config import clear_settings_cache
from plugq.testing import tasks

pytestmark = pytest.mark.redis


class Evil:
    """A pickle that runs a shell command when it is read."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch, tmp_path):
    for name in ("PLUGQ_SECRET_KEY", "PLUGQ_ALLOWED_MODULES", "PLUGQ_URL", "PLUGQ_SERIALIZER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no pyproject.toml above: default settings
    clear_settings_cache()
    yield
    clear_settings_cache()


@pytest.fixture
def url(redis_server) -> str:
    redis_server.flushall()
    return redis_server.url + "/0"


@pytest.fixture
def conn(url):
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def set_key(monkeypatch, key: str | None) -> None:
    if key is None:
        monkeypatch.delenv("PLUGQ_SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("PLUGQ_SECRET_KEY", key)
    clear_settings_cache()


def run(url: str, queue: str, worker_class: str = "simple") -> Worker:
    w = Worker([Queue(queue, connection=url)], connection=url, worker_class=worker_class)
    w.work(burst=True)
    return w


def plant(conn, queue: str, data: bytes, **fields: str) -> str:
    """Write an rq job straight into Redis, as anyone with write access could."""
    job_id = str(uuid.uuid4())
    mapping = {"data": data, "status": "queued", "origin": queue, "description": "planted",
               "created_at": "2024-01-01T00:00:00.000000Z", **fields}
    conn.hset(f"rq:job:{job_id}", mapping=mapping)
    conn.sadd("rq:queues", f"rq:queue:{queue}")
    conn.rpush(f"rq:queue:{queue}", job_id)
    return job_id


def failed_with(url: str, job_id: str, reason: str) -> None:
    job = Job.fetch(job_id, connection=url)
    assert job.get_status() == JobStatus.FAILED
    assert job.exc_info is not None and reason in job.exc_info, job.exc_info
    assert "UntrustedJobError" in job.exc_info
    assert job_id in Queue(job.origin, connection=url).failed_job_registry.get_job_ids()


def rq_data(raw: bytes) -> bytes:
    """A job's ``data`` as rq's ``Job.restore`` reads it: decompressed, or as stored
    (plugq stores a small payload without the zlib)."""
    try:
        return zlib.decompress(raw)
    except zlib.error:
        return raw


def good_job_behind(url: str, queue: str):
    return Queue(queue, connection=url).enqueue(tasks.add, 2, 3)


@pytest.mark.parametrize("worker_class", ["simple", "fork"])
def test_signed_jobs_run_with_the_key(url, conn, monkeypatch, worker_class):
    set_key(monkeypatch, "s3cret")
    q = Queue("signed", connection=url)
    job = q.enqueue(tasks.add, 2, 3, meta={"k": "v"})
    raw = conn.hgetall(f"rq:job:{job.id}")
    assert rq_data(raw[b"data"]).startswith(b"PQR1") and raw[b"plugq_sig"]
    assert job.args == (2, 3)
    run(url, "signed", worker_class)
    assert job.get_status() == "finished" and job.result == 5
    assert job.meta == {"k": "v"}


def test_tampered_args_refused(url, conn, monkeypatch, marker):
    set_key(monkeypatch, "s3cret")
    job = Queue("tamper", connection=url).enqueue(tasks.append_line, str(marker) + ".unused", "x")
    key = f"rq:job:{job.id}"
    signed = rq_data(conn.hget(key, "data"))
    # The attacker keeps the MAC and swaps the arguments underneath it.
    evil = pickle.dumps(("plugq.testing.tasks.append_line", None, (str(marker), "pwned"), {}))
    conn.hset(key, "data", zlib.compress(signed[:36] + evil))
    good = good_job_behind(url, "tamper")
    w = run(url, "tamper")
    failed_with(url, job.id, "bad signature")
    assert not marker.exists()
    assert good.get_status() == "finished"
    assert (w.successful_job_count, w.failed_job_count) == (1, 1)


def test_tampered_callback_refused_and_not_called(url, conn, monkeypatch, marker):
    set_key(monkeypatch, "s3cret")
    job = Queue("tampercb", connection=url).enqueue(tasks.fail, meta={"callback_file": str(marker)})
    # Signed without a callback; the attacker adds one that would write the marker.
    conn.hset(f"rq:job:{job.id}", "failure_callback_name", "plugq.testing.tasks.on_failure_record")
    run(url, "tampercb", "fork")
    failed_with(url, job.id, "bad signature")
    assert not marker.exists()


def test_unsigned_job_refused_when_worker_has_key(url, monkeypatch, marker):
    set_key(monkeypatch, None)
    q = Queue("unsigned", connection=url)
    job = q.enqueue(tasks.append_line, str(marker), "x",
                    on_failure=tasks.on_failure_record, meta={"callback_file": str(marker)})
    set_key(monkeypatch, "s3cret")
    good = good_job_behind(url, "unsigned")
    run(url, "unsigned")
    failed_with(url, job.id, "is not signed and PLUGQ_SECRET_KEY is set")
    assert not marker.exists()  # neither the job nor its on_failure callback ran
    assert good.get_status() == "finished" and good.result == 5


def test_job_signed_with_other_key_refused(url, monkeypatch, marker):
    set_key(monkeypatch, "other-key")
    job = Queue("otherkey", connection=url).enqueue(tasks.append_line, str(marker), "x")
    set_key(monkeypatch, "s3cret")
    run(url, "otherkey", "fork")
    failed_with(url, job.id, "bad signature")
    assert not marker.exists()


def test_allow_list_refuses_os_system_subprocess_and_callbacks(url, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", "plugq.testing.tasks")
    clear_settings_cache()
    q = Queue("allow", connection=url)
    bad = q.enqueue("os.system", f"touch {marker}")
    bad2 = q.enqueue("subprocess.run", ["touch", str(marker)])
    bad3 = q.enqueue(tasks.fail, on_failure="os.system")
    good = q.enqueue(tasks.add, 1, 1)
    run(url, "allow", "fork")
    for job in (bad, bad2):
        failed_with(url, job.id, "is outside allowed_modules ['plugq.testing.tasks']")
    failed_with(url, bad3.id, "on_failure 'os.system' is outside allowed_modules")
    assert not marker.exists()
    assert good.get_status() == "finished" and good.result == 2


def test_allow_list_reads_the_function_name_without_unpickling(url, conn, monkeypatch, marker):
    monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", "plugq.testing.tasks")
    clear_settings_cache()
    job_id = plant(conn, "evil-allow", pickle.dumps(Evil(str(marker))))
    good = good_job_behind(url, "evil-allow")
    run(url, "evil-allow")
    failed_with(url, job_id, "outside allowed_modules")
    assert not marker.exists()
    assert good.get_status() == "finished"


def test_planted_pickle_refused_with_key(url, conn, monkeypatch, marker):
    set_key(monkeypatch, "s3cret")
    job_id = plant(conn, "evil", pickle.dumps(Evil(str(marker))))
    job_id2 = plant(conn, "evil", zlib.compress(pickle.dumps(Evil(str(marker)))),
                    meta=pickle.dumps(Evil(str(marker))))
    good = good_job_behind(url, "evil")
    run(url, "evil", "fork")
    for jid in (job_id, job_id2):
        failed_with(url, jid, "is not signed")
    assert not marker.exists()
    assert good.get_status() == "finished"


def test_planted_pickle_meta_on_a_signed_job_is_never_loaded(url, conn, monkeypatch, marker):
    set_key(monkeypatch, "s3cret")
    job = Queue("evilmeta", connection=url).enqueue(tasks.add, 1, 2)
    conn.hset(f"rq:job:{job.id}", "meta", pickle.dumps(Evil(str(marker))))
    run(url, "evilmeta")
    assert not marker.exists()
    assert job.get_status() == "finished" and job.result == 3


def test_planted_pickle_refused_by_json_worker(url, conn, monkeypatch, tmp_path, marker):
    (tmp_path / "pyproject.toml").write_text('[tool.plugq]\nserializer = "json"\n')
    clear_settings_cache()
    job_id = plant(conn, "evil-json", zlib.compress(pickle.dumps(Evil(str(marker)))),
                   meta=pickle.dumps(Evil(str(marker))))
    ok = Queue("evil-json", connection=url).enqueue(tasks.add, 1, 2)
    assert ok.serializer == "json"
    run(url, "evil-json", "fork")
    failed_with(url, job_id, "serializer = 'json'")
    assert not marker.exists()
    assert ok.get_status() == "finished" and ok.result == 3


def test_refused_job_stays_refused_when_requeued(url, monkeypatch, marker):
    set_key(monkeypatch, None)
    job = Queue("requeue", connection=url).enqueue(tasks.append_line, str(marker), "x")
    set_key(monkeypatch, "s3cret")
    run(url, "requeue")
    failed_with(url, job.id, "not signed")
    # Requeuing with the key does not launder it: the stored job is not re-signed.
    job.requeue()
    run(url, "requeue")
    failed_with(url, job.id, "not signed")
    assert not marker.exists()


def test_sync_mode_signs_and_checks(url, monkeypatch):
    set_key(monkeypatch, "s3cret")
    job = Queue("sync", connection=url, is_async=False).enqueue(tasks.add, 4, 5)
    assert job.get_status() == "finished" and job.result == 9


def test_no_key_no_policy_keeps_rqs_format(url, conn):
    job = Queue("plain", connection=url).enqueue(tasks.add, 1, 2)
    raw = conn.hgetall(f"rq:job:{job.id}")
    assert not rq_data(raw[b"data"]).startswith(b"PQR1")
    assert b"plugq_sig" not in raw
    run(url, "plain")
    assert job.result == 3
